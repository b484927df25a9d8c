"""Spending a passed liveness session on a decision: the face decided on must be the person
who passed the challenge, and a session is used by one decision only."""

from __future__ import annotations

import dataclasses

import numpy as np

from facelens.api import Engine, main_face
from facelens.errors import FacelensError, NoFaceError
from facelens.face import Face
from facelens.liveness.sessions import SessionStore

SESSION_EMBEDDER = "sface"
"""The model whose vector a passed session keeps of the face that passed it."""


class LivenessRequired(FacelensError):
    """The decision needs a passed liveness session and none was given."""


def embedded_main_face(engine: Engine, rgb: np.ndarray, embedder: str,
                       faces: list[Face] | None = None) -> Face | None:
    """The main face of `rgb` (the largest) with its `embedder` vector; None without a face.
    `faces` are the image's faces when detected already (their vectors are left as they are)."""
    chips = None
    if faces is None:
        faces, chips = engine.detect_rgb(rgb)
    if not faces:
        return None
    main = main_face(faces)
    if main.embedder == embedder and main.embedding is not None:
        return main
    at = next(i for i, f in enumerate(faces) if f is main)
    chip = None if chips is None else chips[at][None]
    face = dataclasses.replace(main, embedding=None, embedder=None)
    engine.embed_rgb(rgb, [face], embedder=embedder, chips=chip)
    return face


def spend_live_session(engine: Engine, sessions: SessionStore, caller: str,
                       session_id: str | None, rgb: np.ndarray, *, required: bool,
                       faces: list[Face] | None = None) -> None:
    """Use up `caller`'s passed session `session_id` on the main face of `rgb` (it must be
    who passed it). Without a session: refused when `required`, else nothing to do."""
    if session_id is None:
        if required:
            raise LivenessRequired("this decision needs a passed liveness session "
                                   "(liveness_session): payment galleries and keys never "
                                   "decide on a still image")
        return
    face = embedded_main_face(engine, rgb, SESSION_EMBEDDER, faces)
    if face is None:
        raise NoFaceError("no face to match against the liveness session")
    sessions.consume(session_id, caller, face.embedding)
