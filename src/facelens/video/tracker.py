"""An IoU tracker with constant-velocity prediction: enough for faces sampled at a few frames
per second, with no appearance model (identity comes from the best shot, not the tracker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelens.face import Face
from facelens.geometry import iou


@dataclass(eq=False)  # tracks compare by identity
class Track:
    id: int
    box: np.ndarray
    face: Face
    """The latest detection."""
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    hits: int = 1
    misses: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    """What the pipeline keeps per track (best shot, identity, poster evidence)."""

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (self.misses + 1)


class IouTracker:
    def __init__(self, min_iou: float = 0.25, max_misses: int = 5) -> None:
        self.min_iou, self.max_misses = min_iou, max_misses
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], frame: int) -> tuple[list[Track], list[Track]]:
        """Assign `faces` to tracks (greedily by IoU with each track's predicted box).
        Returns (tracks seen in this frame, tracks that ended)."""
        seen: list[Track] = []
        free = list(range(len(faces)))
        if self.tracks and faces:
            overlap = iou(np.stack([t.predicted() for t in self.tracks]),
                          np.stack([f.box for f in faces]))
            for flat in np.argsort(-overlap, axis=None):
                ti, fi = np.unravel_index(flat, overlap.shape)
                if overlap[ti, fi] < self.min_iou:
                    break
                track = self.tracks[ti]
                if track in seen or fi not in free:
                    continue
                face = faces[fi]
                steps = frame - track.last_frame
                moved = (face.box - track.box) / max(steps, 1)
                track.velocity = 0.5 * track.velocity + 0.5 * moved
                track.box, track.face, track.last_frame = face.box.copy(), face, frame
                track.hits, track.misses = track.hits + 1, 0
                seen.append(track)
                free.remove(fi)
        for fi in free:
            track = Track(self._next_id, faces[fi].box.copy(), faces[fi], frame, frame)
            self._next_id += 1
            self.tracks.append(track)
            seen.append(track)
        ended = []
        for track in self.tracks:
            if track not in seen:
                track.misses += 1
                if track.misses > self.max_misses:
                    ended.append(track)
        self.tracks = [t for t in self.tracks if t not in ended]
        return seen, ended

    def flush(self) -> list[Track]:
        """End every track (the source ended)."""
        ended, self.tracks = self.tracks, []
        return ended
