"""The door: identification, a live face and (when enrolled) a PIN, decided in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelens.gallery.service import Galleries, Identification
from facelens.liveness.sessions import SessionStore
from facelens.policy.live_face import spend_live_session
from facelens.policy.lockout import Lockout


@dataclass(frozen=True)
class DoorDecision:
    opened: bool
    reasons: list[str]
    """Why it stays shut (empty when it opens)."""
    who: Identification | None
    """The recognised face (its best candidate is the person); None if no one was."""

    @property
    def subject_id(self) -> str | None:
        return self.who.candidates[0].subject_id if self.who else None


class Door:
    """Opens only for an enrolled person who just passed a liveness challenge with this face,
    and who typed their PIN if they enrolled one. Wrong PINs count towards the caller's
    lockout of that person, which refuses them until it ends, right PIN or not."""

    def __init__(self, galleries: Galleries, sessions: SessionStore, lockout: Lockout) -> None:
        self.galleries, self.sessions, self.lockout = galleries, sessions, lockout

    def decide(self, gallery: str, rgb: np.ndarray, *, caller: str, liveness_session: str,
               pin: str | None, far: float) -> DoorDecision:
        found = self.galleries.identify(gallery, rgb, far=far, top_k=1)
        # The session is spent whatever follows: one decision per passed challenge.
        spend_live_session(self.galleries.engine, self.sessions, caller, liveness_session, rgb,
                           required=True, faces=[f.face for f in found])
        best = max(found, key=lambda f: f.face.width) if found else None
        if best is None or best.unknown:
            return DoorDecision(False, ["not recognised"], None)
        pair = (caller, best.candidates[0].subject_id)
        if self.lockout.locked_for(pair) > 0:
            return DoorDecision(False, ["locked: too many wrong PINs"], best)
        if self.galleries.check_pin(pair[1], pin) is False:
            self.lockout.failed(pair)
            return DoorDecision(False, ["wrong PIN"], best)
        return DoorDecision(True, [], best)
