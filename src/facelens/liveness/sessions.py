"""Challenge sessions: a random sequence of actions and a nonce, answered once, within 3
minutes, by the key that asked for it; a passed session is consumed by one decision.

Held in memory, per process (like the service's rate limits): a restart voids open sessions,
which errs on the safe side.
"""

from __future__ import annotations

import hmac
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from facelens.api import Engine
from facelens.errors import ConflictError, FacelensError, NotFoundError
from facelens.liveness.judge import ACTIONS, REACTION_S, Judgement

TTL_S = 180.0
FIRST_PROMPT_S = (0.5, 3.0)
PROMPT_GAP_S = (REACTION_S[1] + 0.2, 6.0)
"""When prompts are shown, drawn at random per session: the first this many seconds into the
recording, each next one this long after the previous (longer than the reaction window, so
no action counts for two prompts). The spread is what a recording made earlier cannot
match: `facelens eval liveness` measures how often a genuine recording still does."""


class SessionExpired(FacelensError):
    """The session's 3 minutes are over."""


class SessionRefused(FacelensError):
    """Wrong nonce, another key's session, or a failed/unpassed session used for a decision."""


@dataclass
class Session:
    id: str
    nonce: str
    challenge: list[str]
    owner: str
    """The API key id that asked for it: only that key may answer or use it."""
    created: float
    expires: float
    state: str = "open"
    """open → passed | failed → used (a passed session, consumed by one decision)."""
    judgement: Judgement | None = field(default=None, repr=False)
    prompts_s: list[float] = field(default_factory=list)
    """When to show each action, in seconds from the recording's start (server-chosen, so a
    recording made before the session cannot match them; `judge(..., prompts=...)`)."""

    def public(self) -> dict[str, object]:
        return {"id": self.id, "challenge": self.challenge, "prompts_s": self.prompts_s,
                "state": self.state,
                "expires_in_s": max(0, round(self.expires - time.monotonic(), 1)),
                "result": self.judgement.to_dict() if self.judgement else None}


def prompt_times(count: int, rng: random.Random) -> list[float]:
    """`count` prompt times (s): the first in FIRST_PROMPT_S, then PROMPT_GAP_S apart."""
    times = [round(rng.uniform(*FIRST_PROMPT_S), 1)]
    for _ in range(count - 1):
        times.append(round(times[-1] + rng.uniform(*PROMPT_GAP_S), 1))
    return times


class SessionStore:
    def __init__(self, engine: Engine, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self.same_person = engine.calibration.operating_point("sface", 1e-3).threshold
        """The sface score above which a decision's face is the person who passed."""
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, owner: str, length: int = 3) -> Session:
        rng = secrets.SystemRandom()
        challenge = rng.sample(ACTIONS, k=min(length, len(ACTIONS)))
        now = time.monotonic()
        session = Session(str(uuid.uuid4()), secrets.token_urlsafe(16), challenge, owner, now,
                          now + self.ttl_s, prompts_s=prompt_times(len(challenge), rng))
        with self._lock:
            self._sweep(now)
            self._sessions[session.id] = session
        return session

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires + 3600 < now]:
            del self._sessions[key]

    def get(self, session_id: str, owner: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.owner != owner:
            raise NotFoundError(f"no liveness session {session_id}")
        return session

    def begin_answer(self, session_id: str, owner: str, nonce: str) -> Session:
        """Claim the session for judging: refused if expired, answered before, or the nonce
        is wrong. The claim is atomic, so a replayed answer racing the first one also loses."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                raise NotFoundError(f"no liveness session {session_id}")
            if not hmac.compare_digest(session.nonce, nonce):
                raise SessionRefused("wrong nonce for this liveness session")
            if time.monotonic() > session.expires:
                raise SessionExpired("the liveness session expired (3 minutes); start a new one")
            if session.state != "open":
                raise ConflictError(f"the liveness session was answered already ({session.state})")
            session.state = "judging"
        return session

    def finish(self, session: Session, judgement: Judgement | None) -> None:
        """Record the verdict (None: the answer could not be judged, e.g. a broken video)."""
        with self._lock:
            session.judgement = judgement
            session.state = "passed" if judgement and judgement.passed else "failed"

    def consume(self, session_id: str, owner: str, face_embedding: np.ndarray | None) -> None:
        """Use a passed session for one decision. With `face_embedding` (sface), that face
        must be the person who passed the challenge."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                raise NotFoundError(f"no liveness session {session_id}")
            if time.monotonic() > session.expires:
                raise SessionExpired("the liveness session expired (3 minutes)")
            if session.state != "passed":
                raise SessionRefused(f"the liveness session is {session.state}, not passed")
            judgement = session.judgement
            assert judgement is not None and judgement.embedding is not None
            session.state = "used"  # one decision, whatever it is: no probing with other faces
            if (face_embedding is not None
                    and float(face_embedding @ judgement.embedding) < self.same_person):
                raise SessionRefused("the face is not the person who passed the liveness check")
