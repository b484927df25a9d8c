"""1:1 verification under the service's rules: payment galleries and keys decide only on a
live face, and a caller who keeps failing on one subject is locked out of it."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from facelens.face import Comparison, Verdict
from facelens.gallery.service import Galleries
from facelens.liveness.sessions import SessionStore
from facelens.policy.live_face import spend_live_session
from facelens.policy.lockout import Lockout
from facelens.policy.payment import liveness_required


class Verification:
    def __init__(self, galleries: Galleries, sessions: SessionStore, lockout: Lockout) -> None:
        self.galleries, self.sessions, self.lockout = galleries, sessions, lockout

    def locked_for(self, caller: str, subject_id: str) -> float:
        """Seconds until `caller` may verify against `subject_id` again (0: now)."""
        return self.lockout.locked_for((caller, subject_id))

    def against_subject(self, subject_id: str, rgb: np.ndarray, *, caller: str,
                        key_scopes: Collection[str], liveness_session: str | None,
                        far: float) -> Verdict:
        """Is the main face of `rgb` the enrolled subject? A failure counts towards the
        caller's lockout of that subject; a match clears nothing (failures are counted in
        a sliding window, so matches interleaved with guesses do not reset the count)."""
        subject = self.galleries.subject(subject_id)
        spend_live_session(self.galleries.engine, self.sessions, caller, liveness_session, rgb,
                           required=liveness_required(key_scopes, subject.gallery.purpose))
        reference = self.galleries.subject_reference(subject_id)
        # The image's largest face is the claimant: never a matching face behind them.
        verdict = self.galleries.engine.verify(rgb, reference, far=far,
                                               embedder=reference.embedder)
        if not verdict.match:
            self.lockout.failed((caller, subject_id))
        return verdict

    def band(self, verdict: Verdict) -> str:
        """How sure a match is: "high", "medium" or "low" (the strictest FAR band whose
        threshold its score clears, for the model that decided, in the quality band that
        decided); "none" for no match."""
        if not verdict.match:
            return "none"
        decided_by = verdict.decided_by or verdict.embedder
        calibration = self.galleries.engine.calibration.band_named(verdict.quality_band)
        return calibration.confidence_band(decided_by, verdict.score)[0]

    def between(self, first: np.ndarray, live: np.ndarray, *, caller: str,
                key_scopes: Collection[str], liveness_session: str | None,
                far: float) -> Comparison:
        """The largest face of `first` against every face of `live` (CompareFaces). With a
        liveness session, `live` is the capture that passed it, and only its largest face
        (the one that passed) is compared."""
        engine = self.galleries.engine
        spend_live_session(engine, self.sessions, caller, liveness_session, live,
                           required=liveness_required(key_scopes))
        if liveness_session is None:
            return engine.compare(first, live, far=far)
        verdict = engine.verify(live, first, far=far)
        return Comparison(verdict.faces[0], [verdict])
