"""Challenge sessions: a random sequence of actions and a nonce, answered once, within 3
minutes, by the key that asked for it; a passed session is consumed by one decision.

Held in this process's memory by default (a restart voids open sessions, which errs on the
safe side), or in Redis when `redis_url` is set (cluster/shared.py RedisRecords), so a session
started on one replica is answered and spent on any other, and still only once.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from facelens.api import Engine
from facelens.errors import ConflictError, FacelensError, NotFoundError
from facelens.liveness.judge import ACTIONS, REACTION_S, Judgement
from facelens.liveness.passive import PassiveCues

TTL_S = 180.0
KEEP_S = 3600.0
"""An expired session is kept this long, so answering it says "expired", not "not found"."""
T = TypeVar("T")
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
    """Wall-clock times (time.time()): replicas sharing a session share no monotonic clock."""
    state: str = "open"
    """open → judging → passed | failed → used (a passed session, consumed by one decision)."""
    judgement: Judgement | None = field(default=None, repr=False)
    prompts_s: list[float] = field(default_factory=list)
    """When to show each action, in seconds from the recording's start (server-chosen, so a
    recording made before the session cannot match them; `judge(..., prompts=...)`)."""

    def public(self) -> dict[str, object]:
        return {"id": self.id, "challenge": self.challenge, "prompts_s": self.prompts_s,
                "state": self.state,
                "expires_in_s": max(0, round(self.expires - time.time(), 1)),
                "result": self.judgement.to_dict() if self.judgement else None}


def prompt_times(count: int, rng: random.Random) -> list[float]:
    """`count` prompt times (s): the first in FIRST_PROMPT_S, then PROMPT_GAP_S apart."""
    times = [round(rng.uniform(*FIRST_PROMPT_S), 1)]
    for _ in range(count - 1):
        times.append(round(times[-1] + rng.uniform(*PROMPT_GAP_S), 1))
    return times


class Sessions(Protocol):
    """Where sessions live. `update(id, change)` runs `change` on the stored session (None
    if there is none) and keeps what it changed, atomically: an exception keeps nothing."""

    def put(self, session: Session) -> None: ...

    def get(self, session_id: str) -> Session | None: ...

    def update(self, session_id: str, change: Callable[[Session | None], T]) -> T: ...


class MemorySessions:
    """Sessions in this process (the default)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def put(self, session: Session) -> None:
        with self._lock:
            now = time.time()
            for key in [k for k, s in self._sessions.items() if s.expires + KEEP_S < now]:
                del self._sessions[key]
            self._sessions[session.id] = session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def update(self, session_id: str, change: Callable[[Session | None], T]) -> T:
        with self._lock:  # `change` checks before it changes: a refusal leaves it as it was
            return change(self._sessions.get(session_id))


class TextRecords(Protocol):
    """Texts by id with an expiry, changed atomically (cluster.shared.RedisRecords)."""

    def put(self, record_id: str, text: str, ttl_s: float) -> None: ...

    def get(self, record_id: str) -> str | None: ...

    def update(self, record_id: str,
               change: Callable[[str | None], tuple[str | None, T]]) -> T: ...


class SharedSessions:
    """Sessions as JSON records that every replica reads (Redis). The passed face's vector is
    kept until the session is spent, then dropped, and the record expires KEEP_S after the
    session does."""

    def __init__(self, records: TextRecords) -> None:
        self.records = records

    def put(self, session: Session) -> None:
        self.records.put(session.id, _encoded(session), session.expires - time.time() + KEEP_S)

    def get(self, session_id: str) -> Session | None:
        text = self.records.get(session_id)
        return None if text is None else _decoded(text)

    def update(self, session_id: str, change: Callable[[Session | None], T]) -> T:
        def step(text: str | None) -> tuple[str | None, T]:
            session = None if text is None else _decoded(text)
            result = change(session)
            return (None if session is None else _encoded(session)), result

        return self.records.update(session_id, step)


def _encoded(session: Session) -> str:
    fields = dataclasses.asdict(dataclasses.replace(session, judgement=None))
    judgement = session.judgement
    if judgement is not None:
        fields["judgement"] = {
            **dataclasses.asdict(dataclasses.replace(judgement, embedding=None)),
            "embedding": None if judgement.embedding is None
            else judgement.embedding.astype(np.float32).tolist()}
    return json.dumps(fields, default=_plain)


def _plain(value: object) -> object:
    """numpy scalars in a judgement (a float32 score, a bool_ verdict) as Python's own."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _decoded(text: str) -> Session:
    fields = json.loads(text)
    judged = fields.pop("judgement")
    session = Session(**fields)
    if judged is not None:
        passive, embedding = judged.pop("passive"), judged.pop("embedding")
        session.judgement = Judgement(
            **judged, passive=None if passive is None else PassiveCues(**passive),
            embedding=None if embedding is None else np.asarray(embedding, np.float32))
    return session


class SessionStore:
    """The rules of a session (who may answer or spend it, once, in time), on `sessions`:
    in memory by default, SharedSessions for replicas."""

    def __init__(self, engine: Engine, ttl_s: float = TTL_S,
                 sessions: Sessions | None = None) -> None:
        self.ttl_s = ttl_s
        self.same_person = engine.calibration.operating_point("sface", 1e-3).threshold
        """The sface score above which a decision's face is the person who passed."""
        self.sessions = sessions or MemorySessions()

    def create(self, owner: str, length: int = 3) -> Session:
        rng = secrets.SystemRandom()
        challenge = rng.sample(ACTIONS, k=min(length, len(ACTIONS)))
        now = time.time()
        session = Session(str(uuid.uuid4()), secrets.token_urlsafe(16), challenge, owner, now,
                          now + self.ttl_s, prompts_s=prompt_times(len(challenge), rng))
        self.sessions.put(session)
        return session

    def get(self, session_id: str, owner: str) -> Session:
        return _owned(self.sessions.get(session_id), session_id, owner)

    def begin_answer(self, session_id: str, owner: str, nonce: str) -> Session:
        """Claim the session for judging: refused if expired, answered before, or the nonce
        is wrong. The claim is atomic, so a replayed answer racing the first one (on this
        replica or another) also loses."""

        def claim(stored: Session | None) -> Session:
            session = _owned(stored, session_id, owner)
            if not hmac.compare_digest(session.nonce, nonce):
                raise SessionRefused("wrong nonce for this liveness session")
            if time.time() > session.expires:
                raise SessionExpired("the liveness session expired (3 minutes); start a new one")
            if session.state != "open":
                raise ConflictError(f"the liveness session was answered already ({session.state})")
            session.state = "judging"
            return session

        return self.sessions.update(session_id, claim)

    def finish(self, session: Session, judgement: Judgement | None) -> None:
        """Record the verdict (None: the answer could not be judged, e.g. a broken video)."""
        session.judgement = judgement
        session.state = "passed" if judgement and judgement.passed else "failed"

        def record(stored: Session | None) -> None:
            if stored is not None:  # else it expired and went while being judged
                stored.judgement, stored.state = session.judgement, session.state

        self.sessions.update(session.id, record)

    def consume(self, session_id: str, owner: str, face_embedding: np.ndarray | None) -> None:
        """Use a passed session for one decision. With `face_embedding` (sface), that face
        must be the person who passed the challenge."""

        def spend(stored: Session | None) -> np.ndarray:
            session = _owned(stored, session_id, owner)
            if time.time() > session.expires:
                raise SessionExpired("the liveness session expired (3 minutes)")
            if session.state != "passed":
                raise SessionRefused(f"the liveness session is {session.state}, not passed")
            judgement = session.judgement
            assert judgement is not None and judgement.embedding is not None
            passed_face = judgement.embedding
            # One decision, whatever it is: no probing with other faces. Who passed is
            # needed for this decision only, so the vector goes with it.
            session.state, judgement.embedding = "used", None
            return passed_face

        passed_face = self.sessions.update(session_id, spend)
        if face_embedding is not None and float(face_embedding @ passed_face) < self.same_person:
            raise SessionRefused("the face is not the person who passed the liveness check")


def _owned(session: Session | None, session_id: str, owner: str) -> Session:
    if session is None or session.owner != owner:
        raise NotFoundError(f"no liveness session {session_id}")
    return session
