"""One camera's pipeline: detect → track → keep each track's best shot → embed it, and the
best shot of a later, separated stretch of the track (again for a clearly better shot) → match
the track's template (the quality-weighted mean of its embedded frames) against the camera's
galleries → one alert per (track, subject) once the template of at least two separated frames
clears the threshold, de-duplicated per person per camera by a cool-down. A face inside a
phone, monitor, TV, laptop or book is a depiction: stored for review, never alerted.

Privacy: faces that match nothing live only in memory, for as long as their track does; no
crop, embedding, frame or log line about them is ever written. An alert stores the matched
person's best shot and the frame with every other face blurred, both sealed with that
person's key (events/store.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facelens.face import Face
from facelens.gallery.service import Galleries
from facelens.geometry import crop_with_margin
from facelens.scene.detect import Objects
from facelens.video.depiction import ScreenMemory, find_depiction
from facelens.video.rigid_region import RigidRegion, scene_motion
from facelens.video.source import Frame
from facelens.video.template import Template
from facelens.video.tracker import IouTracker, Track
from facelens.vision.decode import encode_jpeg
from facelens.vision.planarity import PlanarityEvidence

log = logging.getLogger("facelens.video")
CUT_CORRELATION = 0.8
"""Histogram correlation between consecutive frames below which a scene cut is assumed."""
NEAR_MISS_FACTOR = 3.0
"""A template that fails the threshold but would pass at this many times the FPIR earns a
second separated frame: averaging two can lift a soft or turned face over it (Obama's profile
on the Hamilton clip: 0.738 alone, 0.746 with a second frame, threshold 0.740). 10× cost more
embeddings than the 0.1-per-detection budget allows."""


@dataclass
class Alert:
    camera: str
    subject_id: str
    name: str
    gallery: str
    confidence: str
    time: float
    track_id: int
    flagged: str | None = None
    """"poster" when the face moved as a flat picture, "depiction: <what>" when a phone,
    monitor, TV, laptop, book or a frame shows it: stored, but raises no normal alert."""
    score: float = 0.0
    """The track template's similarity to the subject."""
    margin: float = 0.0
    """`score` minus the threshold it had to clear: how close the call was."""
    frames: int = 1
    """Embedded frames in the template that decided."""
    box: list[float] = field(default_factory=list)
    """The best shot's face in its frame (x1, y1, x2, y2 px), as sinks and MQTT carry it."""
    cue: str | None = None
    """The depiction cue that fired ("object", "bezel", "rigid"); None for anything else."""
    event_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def status(self) -> str:
        """The stored event's status: "depiction" (a screen or a print), "suppressed" (a
        poster), else "unconfirmed" (a normal alert)."""
        if self.cue is not None:
            return "depiction"
        return "suppressed" if self.flagged else "unconfirmed"


@dataclass
class _Shot:
    quality: float
    tick: int
    box: np.ndarray
    """The face in frame coordinates."""
    crop: np.ndarray
    face: Face
    """The face in the crop's coordinates."""
    chip: np.ndarray
    """The face's aligned chip, cut at detection (for quality) and embedded as it is."""
    frame: np.ndarray
    others: list[np.ndarray]
    """The boxes of every other face in `frame`: blurred in the stored frame."""
    time: float
    """The frame's video time."""


@dataclass
class _TrackState:
    poster: PlanarityEvidence = field(default_factory=PlanarityEvidence)
    region: RigidRegion = field(default_factory=RigidRegion)
    """Is the face glued to a rigid region (a screen) moving against the scene?"""
    observations: int = 0
    first_time: float = 0.0
    last_tick: int = -1
    best: _Shot | None = None
    """The best shot of the whole track (the stored snapshot)."""
    pending: _Shot | None = None
    """The best shot since the last embedded one (the next to embed)."""
    embedded_quality: float | None = None
    template: Template = field(default_factory=Template)
    embedded: list[_Shot] = field(default_factory=list)
    """The shots in the template (their frames are what the depiction check looks at)."""
    match: tuple[str, str, str, str] | None = None
    """(subject id, name, gallery, confidence band)."""
    score: float = 0.0
    threshold: float = 0.0
    """The open-set threshold the match cleared (its probe's quality cell's)."""
    near_miss: bool = False
    """The template would clear the threshold of NEAR_MISS_FACTOR × the FPIR."""
    alerted: bool = False


@dataclass
class WatchStats:
    frames: int = 0
    skipped_still: int = 0
    detections: int = 0
    embeddings: int = 0
    tracks: int = 0


class Watcher:
    def __init__(self, camera: str, galleries: Galleries, gallery_names: list[str], *,
                 far: float = 1e-3, cooldown_s: float = 60.0, min_observations: int = 3,
                 reembed_margin: float = 0.15, max_embeds: int = 3, motion: bool = False,
                 patience_s: float = 3.0, template: bool = True, min_gap: int = 4,
                 depictions: bool = True,
                 on_alert: Callable[[Alert, bytes, bytes], int | None] | None = None) -> None:
        self.camera, self.galleries, self.gallery_names = camera, galleries, gallery_names
        self.engine = galleries.engine
        self.far, self.cooldown_s, self.min_observations = far, cooldown_s, min_observations
        self.reembed_margin, self.max_embeds, self.motion = reembed_margin, max_embeds, motion
        self.patience_s = patience_s
        self.template, self.min_gap, self.depictions = template, min_gap, depictions
        """template: identity from the mean of >= 2 embedded frames at least `min_gap`
        processed frames apart (False: the latest best shot alone decides, one frame)."""
        self.min_frames = 2 if template else 1
        self.on_alert = on_alert
        """Stores/delivers an alert (snapshot JPEG, blurred frame JPEG); returns an event id."""
        self.embedders = sorted({galleries.gallery(g).embedder for g in gallery_names})
        self.tracker = IouTracker()
        self.stats = WatchStats()
        self.labels: list[tuple[np.ndarray, str, bool]] = []
        """(box, label, named) per face of the latest frame: what an annotated view draws."""
        self.frame_tracks: list[tuple[int, np.ndarray]] = []
        """(track id, box) per face of the latest frame."""
        self.named: dict[int, str] = {}
        """Track id -> the subject id it was last matched to (ids only, for evaluation)."""
        self._last_alert: dict[str, float] = {}
        self.screens = ScreenMemory()
        self._previous_grey: np.ndarray | None = None
        self._previous_small: np.ndarray | None = None
        self._previous_histogram: np.ndarray | None = None
        self._tick = 0

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame, detected: Objects | None = None) -> list[Alert]:
        """One frame's alerts. `detected`: the frame's objects when the street layer already
        ran NanoDet on it (the screens among them stand in for the depiction check's pass)."""
        self.stats.frames += 1
        grey = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
        if self.motion and self._still(grey) and not self.tracker.tracks:
            self.stats.skipped_still += 1
            self.labels, self.frame_tracks = [], []
            return []
        faces, chips = self.engine.detect_rgb(frame.rgb)
        self.stats.detections += len(faces)
        chip_of = {id(face): chip for face, chip in zip(faces, chips if chips is not None else [],
                                                        strict=True)}
        alerts = []
        if self._cut(frame.rgb):  # a new shot: nobody in it continues a track of the last one
            alerts.extend(self._end(self.tracker.flush(), frame.time))
            self._previous_grey = None
            self.screens.forget()
        seen, ended = self.tracker.update(faces, self._tick)
        if self.depictions and seen:  # NanoDet twice a second while faces are in view
            self.screens.observe(frame.time, frame.rgb, detected)
        # The scene's motion since the last frame, once for every track's rigid-region cue.
        scene_step = scene_motion(self._previous_grey, grey) \
            if self.depictions and seen and self._previous_grey is not None else None
        for track in seen:
            state = self._observe(track, frame, grey, faces, chip_of[id(track.face)],
                                  scene_step)
            self._maybe_embed(track, state)
            if state.match and not state.alerted and self._sure(state, frame.time):
                alerts.extend(self._alert(track, state, frame.time))
        alerts.extend(self._end(ended, frame.time))
        self.labels = [self._label(t) for t in seen]
        self.frame_tracks = [(t.id, t.box) for t in seen]
        self._previous_grey = grey
        self._tick += 1
        return alerts

    def finish(self, time: float) -> list[Alert]:
        """The source ended: close every track (short tracks may still alert)."""
        return self._end(self.tracker.flush(), time)

    def _cut(self, rgb: np.ndarray) -> bool:
        """A scene cut (edited video, a PTZ camera jumping to a preset): the hue-saturation
        histograms of consecutive processed frames barely correlate. On the Hamilton clip its
        3 cuts score 0.57-0.70 and every other frame pair at least 0.93."""
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        histogram = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
        cv2.normalize(histogram, histogram)
        previous, self._previous_histogram = self._previous_histogram, histogram
        return previous is not None and cv2.compareHist(
            previous, histogram, cv2.HISTCMP_CORREL) < CUT_CORRELATION

    def _still(self, grey: np.ndarray) -> bool:
        small = cv2.resize(grey, (160, 90), interpolation=cv2.INTER_AREA)
        previous, self._previous_small = self._previous_small, small
        if previous is None:
            return False
        changed = np.count_nonzero(cv2.absdiff(small, previous) > 20) / small.size
        return changed < 0.002

    def _observe(self, track: Track, frame: Frame, grey: np.ndarray, faces: list[Face],
                 chip: np.ndarray, scene_step: np.ndarray | None) -> _TrackState:
        state = track.state.setdefault("watch", _TrackState())
        if state.observations == 0:
            self.stats.tracks += 1
            state.first_time = frame.time
        state.observations += 1
        consecutive = state.last_tick == self._tick - 1
        state.poster.observe(self._previous_grey if consecutive else None, grey, track.box)
        if self.depictions:
            state.region.observe(self._previous_grey if consecutive else None, grey,
                                 track.box, scene_step)
        state.last_tick = self._tick
        quality = track.face.quality.score if track.face.quality else 0.0
        better_than_best = state.best is None or quality > state.best.quality
        ticks = state.template.ticks
        # The next frame to embed comes from a stretch separated from the last embedded one.
        eligible = not self.template or not ticks or self._tick - ticks[-1] >= self.min_gap
        better_pending = eligible and (state.pending is None or quality > state.pending.quality)
        if better_than_best or better_pending:
            crop, face = _crop(frame.rgb, track.face)
            others = [f.box for f in faces if f is not track.face]
            shot = _Shot(quality, self._tick, track.face.box.copy(), crop, face, chip,
                         frame.rgb, others, frame.time)
            if better_pending:
                state.pending = shot
            if better_than_best:
                state.best = shot
        return state

    def _maybe_embed(self, track: Track, state: _TrackState, ending: bool = False) -> None:
        """Embed the pending shot when it is the track's first, the second frame a matched
        template needs (separated from the first), or clearly better than any embedded one."""
        shot, template = state.pending, state.template
        if shot is None:
            return
        # A second frame only to confirm a match (pending shots are separated already): a
        # track that matches nothing costs one embedding, as with a single best shot.
        second = len(template) < self.min_frames and state.match is not None
        closer = self.template and state.near_miss and len(template) < self.min_frames
        better = (state.embedded_quality is not None and len(template) < self.max_embeds
                  and shot.quality >= state.embedded_quality + self.reembed_margin)
        if template and not ending and not (second or closer or better):
            return
        if ending and not (second or closer):
            return
        state.pending = None
        state.embedded.append(shot)
        state.embedded_quality = max(state.embedded_quality or 0.0, shot.quality)
        vectors = {}
        for embedder in self.embedders:
            face = dataclasses.replace(shot.face, embedding=None, embedder=None)
            self.engine.embed_rgb(shot.crop, [face], embedder=embedder, chips=shot.chip[None])
            self.stats.embeddings += 1
            assert face.embedding is not None
            vectors[embedder] = face.embedding
        template.add(shot.tick, shot.quality, vectors)
        self._identify(track, state, shot.face)

    def _identify(self, track: Track, state: _TrackState, face: Face) -> None:
        """Match the track's template (the latest shot alone without templates)."""
        found: list[tuple[float, tuple[str, str, str, str], float]] = []
        state.near_miss = False
        for name in self.gallery_names:
            embedder = self.galleries.gallery(name).embedder
            vector = state.template.mean(embedder, last_only=not self.template)
            probe = dataclasses.replace(face, embedding=vector, embedder=embedder)
            (result,) = self.galleries.match(name, [probe], far=self.far, top_k=1)
            if result.candidates:
                top = result.candidates[0]
                found.append((top.score, (top.subject_id, top.name, name, top.band),
                              result.threshold))
            elif self.template and not found:
                lax = min(self.far * NEAR_MISS_FACTOR, 0.5)
                (near,) = self.galleries.match(name, [probe], far=lax, top_k=1,
                                               record_seen=False)
                state.near_miss = state.near_miss or bool(near.candidates)
        if found:
            state.score, state.match, state.threshold = max(found)
            self.named[track.id] = state.match[0]
        elif state.match and not state.alerted:
            state.match = None  # a clearer shot no longer supports the earlier match
            self.named.pop(track.id, None)

    def _sure(self, state: _TrackState, time: float) -> bool:
        """Enough seen to alert: the poster check has decided, or has had `patience_s` to
        (a face too small for it never gets a verdict and must not wait forever). Tracks that
        end sooner alert when they end."""
        return (state.observations >= self.min_observations
                and len(state.template) >= self.min_frames
                and (state.poster.decided or time - state.first_time >= self.patience_s))

    def _end(self, ended: list[Track], time: float) -> list[Alert]:
        alerts = []
        for track in ended:
            state = track.state.get("watch")
            if state and not state.alerted and state.observations >= 2:
                self._maybe_embed(track, state, ending=True)  # a last chance at a 2nd frame
                if state.match and len(state.template) >= self.min_frames:
                    alerts.extend(self._alert(track, state, time))
            track.state.clear()  # the track's frames and crops leave memory with it
        return alerts

    def _alert(self, track: Track, state: _TrackState, time: float) -> list[Alert]:
        assert state.match is not None and state.best is not None
        state.alerted = True
        subject_id, name, gallery, band = state.match
        cue, flagged = (None, "poster") if state.poster.planar else self._depiction(state,
                                                                                  time)
        if flagged is None:
            last = self._last_alert.get(subject_id)
            if last is not None and time - last < self.cooldown_s:
                return []  # the same person on this camera, within the cool-down
            self._last_alert[subject_id] = time
        alert = Alert(self.camera, subject_id, name, gallery, band, round(time, 2), track.id,
                      flagged, round(state.score, 4), round(state.score - state.threshold, 4),
                      len(state.template), [round(float(v), 1) for v in state.best.box], cue)
        if self.on_alert:
            alert.event_id = self.on_alert(alert, encode_jpeg(state.best.crop, 90),
                                           encode_jpeg(_blur_others(state.best), 90))
        return [alert]

    def _depiction(self, state: _TrackState, time: float) -> tuple[str | None, str | None]:
        """(cue, "depiction: <what>") when the face stayed glued to a region moving against
        the scene (followed every frame), a screen seen in the last seconds holds it in any
        of the track's kept frames (`ScreenMemory`): the best shot, the embedded ones, the
        pending one, or a cue finds it shown by something in one of them (NanoDet runs on at
        most 5 frames of a track about to alert); (None, None) else."""
        if not self.depictions:
            return None, None
        if state.region.rigid:
            return "rigid", "depiction: moving frame"
        shots = [state.best, *state.embedded, state.pending]
        unique = list({id(s): s for s in shots if s is not None}.values())
        if name := self._held(unique, time):  # the memory first: it costs no NanoDet pass
            return "object", f"depiction: {name}"
        for shot in unique:  # the screens these looks find are remembered for other tracks
            if found := find_depiction(shot.frame, shot.box, self.screens, shot.time):
                return found[0], f"depiction: {found[1]}"
            # ...and for this track's other kept frames: a screen NanoDet saw only here may
            # hold the face where another shot caught it
            if name := self._held(unique, time):
                return "object", f"depiction: {name}"
        return None, None

    def _held(self, shots: list[_Shot], time: float) -> str | None:
        """The name of a remembered screen holding the face of one of `shots`."""
        for shot in shots:
            if name := self.screens.holding(shot.box, time):
                return name
        return None

    def _label(self, track: Track) -> tuple[np.ndarray, str, bool]:
        state: _TrackState | None = track.state.get("watch")
        if state and state.match:
            tag = " (poster?)" if state.poster.planar else ""
            return track.box, f"#{track.id} {state.match[1]}{tag}", True
        return track.box, f"#{track.id}", False


def _crop(rgb: np.ndarray, face: Face, margin: float = 0.6) -> tuple[np.ndarray, Face]:
    """The face with a margin (alignment needs context), and the face in crop coordinates."""
    crop, offset = crop_with_margin(rgb, face.box, margin)
    shifted = dataclasses.replace(face, box=face.box - np.tile(offset, 2),
                                  landmarks=face.landmarks - offset)
    return crop, shifted


def _blur_others(shot: _Shot) -> np.ndarray:
    """The best shot's frame with every face but the matched one blurred beyond recognition."""
    out = shot.frame.copy()
    h, w = out.shape[:2]
    for box in shot.others:
        x1, y1, x2, y2 = np.round(box).astype(int).tolist()
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 > x1 and y2 > y1:
            small = cv2.resize(out[y1:y2, x1:x2], (max(1, (x2 - x1) // 12),
                                                   max(1, (y2 - y1) // 12)),
                               interpolation=cv2.INTER_AREA)
            out[y1:y2, x1:x2] = cv2.GaussianBlur(
                cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST),
                (0, 0), 3)
    return out

