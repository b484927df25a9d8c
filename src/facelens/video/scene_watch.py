"""The street pipeline over video frames: people and vehicles detected (where something
moves), tracked, described, plates read and voted per vehicle, hotlists checked.

Hotlists, not histories: a track lives in memory only. When it matches a plate hotlist entry
or a description rule, `on_alert` is called once per (track, reason) with its description and
a crop; otherwise nothing about it outlives the track — no row, no crop, no plate text, no log
line. The only thing kept about passers-by is `counts`: tracks per (camera, class, minute),
a track counted once, in the minute of its second detection, under its class then.

Motion gating: a running-average background of a small grey thumbnail; a frame in which less
than MOTION_SHARE of the thumbnail changed is not sent to the detector, and its tracks are
kept as they are (a parked car neither ages out nor is counted again).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.api import Engine
from facelens.events.hotlists import Hotlists
from facelens.face import Face
from facelens.scene.attributes import (
    UNKNOWN,
    Attribute,
    age_group,
    clear_of_bottom,
    describe_person,
    describe_vehicle,
)
from facelens.scene.detect import (
    MOTOR_VEHICLES,
    VEHICLES,
    Objects,
    detect_street,
    one_box_per_vehicle,
)
from facelens.scene.plates import VEHICLE_SCAN, PlateReading, read_plate, vote
from facelens.scene.pose import body_pose
from facelens.video.source import Frame, SourceError
from facelens.video.tracker import IouTracker, Track
from facelens.video.writer import AnnotatedWriter
from facelens.vision.decode import encode_jpeg

MOTION_SIDE = 160
"""Longer side (px) of the thumbnail motion is measured on."""
MOTION_DELTA = 18
"""Grey-level change (0..255) that counts a thumbnail pixel as moving."""
MOTION_SHARE = 0.002
"""Share of the thumbnail that must move for the frame to be detected."""
BACKGROUND_RATE = 0.1
CUT_SHARE = 0.6
"""Share of the thumbnail changed since the previous frame that makes it a new scene (a cut
in a file, a PTZ preset, another stream): its tracks end. Street clips at 5 fps change at
most 0.23 of it between frames, a stage clip 0.42, cuts between parked cars 0.77."""
MIN_HITS = 2
"""Detections before a track is counted and may alert (one-frame false positives never are)."""
PLATE_MIN_HEIGHT = 60
"""Vehicle box height (px) below which no plate is looked for: too small to read."""
PLATE_READS = 3
"""A vehicle's plate is no longer read once this many readings agree."""
PLATE_TRIES = 25
"""...or it was read this many times (5 s at 5 fps): a parked car whose plate cannot be read
(seen from above, turned away) was read on every detected frame for as long as it stood."""
PLATES_PER_FRAME = 1
"""Plate reads per detected frame (a read costs about two detections): the vehicles read the
fewest times first, the largest among them, so a busy road is read in turn (by readings, not
tries, an unreadable car kept the turn of every other)."""
PLATE_SCAN_MIN = 320
"""A vehicle box is scanned for text at twice its size, between this and VEHICLE_SCAN px:
upscaling a small box further costs time and finds no more characters."""
FACE_EVERY = 4
"""A person track's face is looked for at most every this many of its detections..."""
FACE_MIN_PERSON_PX = 160
"""...when its box is at least this tall..."""
FACE_MIN_PX = 48
"""...and perceived sex is taken only from a face at least this wide (px): a smaller face is
below what the face engine's attribute model was measured on."""
POSE_EVERY = 5
"""A person track's body pose (adult/child, ~20 ms) is measured at most every this many of its
detections (1 s at 5 fps), from its MIN_HITS-th on..."""
POSE_MIN_PERSON_PX = 120
"""...when its box is at least this tall (shorter, the ear span is a few pixels) and clear of
the frame's bottom (else the feet may be cut off)..."""
POSE_ANSWERS = 3
"""...until it answered adult or child this many times (the answers are voted; an unknown one
is not a vote, so a body walking in does not dilute the answer once it is whole)..."""
POSE_TRIES = 10
"""...or was measured this many times."""
CROP_JPEG_QUALITY = 90
Alert = dict[str, Any]


class MotionGate:
    def __init__(self) -> None:
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self.cut = False
        """Whether the last frame was a new scene: CUT_SHARE of it changed since the one
        before, or its shape did."""

    def moving(self, rgb: np.ndarray) -> bool:
        """Whether enough of the frame changed since the running background."""
        h, w = rgb.shape[:2]
        scale = MOTION_SIDE / max(h, w)
        grey = cv2.cvtColor(cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        grey = cv2.GaussianBlur(grey, (5, 5), 0).astype(np.float32)
        previous, self._previous = self._previous, grey
        # A stream back at another shape (a camera reconfigured, a reconnect to its substream)
        # starts a new background: compared with the old one, it stopped the camera.
        if self._background is None or self._background.shape != grey.shape:
            self.cut = self._background is not None
            self._background = grey.copy()
            return True
        assert previous is not None
        self.cut = float((np.abs(grey - previous) > MOTION_DELTA).mean()) >= CUT_SHARE
        changed = float((np.abs(grey - self._background) > MOTION_DELTA).mean())
        cv2.accumulateWeighted(grey, self._background, BACKGROUND_RATE)
        return changed >= MOTION_SHARE


@dataclass
class Description:
    """Per track: class votes, attribute votes (value -> summed confidence), plate readings."""

    classes: Counter[str] = field(default_factory=Counter)
    votes: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(float)))
    seen: dict[str, int] = field(default_factory=Counter)
    plates: list[PlateReading] = field(default_factory=list)
    detections: int = 0
    alerted: set[str] = field(default_factory=set)

    @property
    def kind(self) -> str:
        return self.classes.most_common(1)[0][0]

    def add(self, attributes: dict[str, Attribute]) -> None:
        for name, attribute in attributes.items():
            self.seen[name] += 1
            if attribute.confidence > 0:
                self.votes[name][attribute.value] += attribute.confidence

    def attributes(self) -> dict[str, tuple[str, float]]:
        """Each attribute's winning value and its mean confidence over the track's frames."""
        out = {}
        for name, seen in self.seen.items():
            votes = self.votes.get(name)
            if not votes:
                out[name] = ("unknown", 0.0)
                continue
            value = max(votes, key=lambda v: votes[v])
            out[name] = (value, votes[value] / seen)
        if self.classes and self.kind == "person":
            for name in ("sex", "age_group"):
                out.setdefault(name, (UNKNOWN, 0.0))
        return out

    def plate(self) -> PlateReading | None:
        return vote(self.plates)


@dataclass
class SceneWatch:
    """One camera's street analysis; feed it frames with `process`."""

    camera: str
    hotlists: Hotlists = field(default_factory=Hotlists)
    on_alert: Callable[[Alert], None] | None = None
    gate: bool = True
    region: str = "us"
    detect_side: int | None = None
    """The detector's input, longer side (settings.street_detect_side; None: 416×416)."""
    engine: Engine | None = None
    """The face engine: with it, a person track's perceived sex is read from its face (the
    largest face inside the top of its box); without it, sex stays unknown."""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    counts: Counter[tuple[str, str, datetime]] = field(default_factory=Counter)
    """(camera, class, UTC minute) -> tracks counted in that minute, by the wall clock as
    events are (a file played faster than real time is counted when it is watched, not at
    its video time). Whoever stores them clears it (video/scene_camera.py, once a minute)."""
    frames: int = 0
    detected: int = 0
    latest: Objects | None = None
    """The last processed frame's objects, None when the motion gate skipped it: a face
    watcher on the same frames takes the screens among them (video/depiction.py)."""

    def __post_init__(self) -> None:
        # People and vehicles tracked apart: a cyclist's person box never takes over the bike's.
        self._trackers = {"person": IouTracker(0.2, 8), "vehicle": IouTracker(0.2, 8)}
        self._motion = MotionGate()

    def process(self, frame: Frame) -> list[tuple[np.ndarray, str, bool]]:
        """Analyse one frame; returns its labels (box, text, alerted) for drawing."""
        self.frames += 1
        self.latest = None
        moving = self._motion.moving(frame.rgb)  # measured ungated too: it tells a cut
        if self._motion.cut:  # a new scene: a track would go on in another vehicle
            for tracker in self._trackers.values():
                tracker.flush()
        if self.gate and not moving:
            return self._labels()
        self.detected += 1
        found = self.latest = detect_street(frame.rgb, self.detect_side)
        groups: dict[str, list[Face]] = {"person": [], "vehicle": []}
        # One box per vehicle: its car box and truck box became two tracks, counted twice.
        tracked = one_box_per_vehicle(found)
        for name, score, box in zip(tracked.names, tracked.scores, tracked.boxes, strict=True):
            if name == "person" or name in VEHICLES:
                group = "person" if name == "person" else "vehicle"
                # The tracker tracks anything with a box; a Face holds the box, class, score.
                groups[group].append(Face(box, np.zeros((5, 2), np.float32), float(score), name))
        now = self.started + timedelta(seconds=frame.time)
        readable: list[Track] = []
        for group, tracker in self._trackers.items():
            seen, _ended = tracker.update(groups[group], frame.index)
            for track in seen:
                if track.misses == 0 and self._describe(track, frame.rgb, now):
                    readable.append(track)
        readable.sort(key=lambda t: (t.state.get("plate_tries", 0), t.box[1] - t.box[3]))
        for track in readable[:PLATES_PER_FRAME]:
            track.state["plate_tries"] = track.state.get("plate_tries", 0) + 1
            longer = float(max(track.box[2] - track.box[0], track.box[3] - track.box[1]))
            reading = read_plate(frame.rgb, track.box, self.region,
                                 scan_side=int(min(VEHICLE_SCAN, max(PLATE_SCAN_MIN, 2 * longer))))
            if reading is not None:
                track.state["description"].plates.append(reading)
                self._check(track, track.state["description"], frame.rgb, now)
        return self._labels()

    def _describe(self, track: Track, rgb: np.ndarray, now: datetime) -> bool:
        """Add this frame's attributes to the track's description; whether its plate is
        still worth reading."""
        desc: Description = track.state.setdefault("description", Description())
        name, box = track.face.detector, track.box
        desc.classes[name] += 1
        desc.detections += 1
        if name == "person":
            desc.add(describe_person(rgb, box, rgb.shape[0]))
            if (desc.detections % POSE_EVERY == MIN_HITS % POSE_EVERY
                    and box[3] - box[1] >= POSE_MIN_PERSON_PX and clear_of_bottom(box, rgb.shape[0])
                    and desc.seen["age_group"] < POSE_ANSWERS
                    and track.state.get("pose_tries", 0) < POSE_TRIES):
                track.state["pose_tries"] = track.state.get("pose_tries", 0) + 1
                answer = age_group(body_pose(rgb, box), box, (rgb.shape[1], rgb.shape[0]))
                if answer.value != UNKNOWN:
                    desc.add({"age_group": answer})
            if (self.engine is not None and desc.detections % FACE_EVERY == 1
                    and box[3] - box[1] >= FACE_MIN_PERSON_PX):
                self._face(track, desc, rgb)
        else:
            desc.add(describe_vehicle(rgb, box, name, track.face.score))
        if desc.detections == MIN_HITS:
            minute = datetime.now(UTC).replace(second=0, microsecond=0)
            self.counts[(self.camera, desc.kind, minute)] += 1
        if desc.detections < MIN_HITS:
            return False
        self._check(track, desc, rgb, now)
        best = desc.plate()
        agreeing = sum(p.text == best.text for p in desc.plates) if best else 0
        return (name in MOTOR_VEHICLES and box[3] - box[1] >= PLATE_MIN_HEIGHT
                and agreeing < PLATE_READS and track.state.get("plate_tries", 0) < PLATE_TRIES)

    def _face(self, track: Track, desc: Description, rgb: np.ndarray) -> None:
        """The face belonging to this person box (the largest in its top third), matched to the
        track and, when large enough, its perceived sex added to the description."""
        assert self.engine is not None
        x1, y1, x2, y2 = (int(v) for v in track.box)
        top = rgb[max(0, y1):max(0, y1) + max(1, (y2 - y1) // 3), max(0, x1):x2]
        if top.shape[0] < FACE_MIN_PX or top.shape[1] < FACE_MIN_PX:
            return
        faces = [f for f in self.engine.analyze(np.ascontiguousarray(top))
                 if f.box[2] - f.box[0] >= FACE_MIN_PX and f.attributes is not None]
        if not faces:
            return
        face = max(faces, key=lambda f: float(f.box[2] - f.box[0]))
        assert face.attributes is not None
        track.state["face_box"] = face.box + np.array([x1, y1, x1, y1], np.float32)
        desc.add({"sex": Attribute(face.attributes.sex, face.attributes.sex_confidence)})

    def _check(self, track: Track, desc: Description, rgb: np.ndarray, now: datetime) -> None:
        attributes = desc.attributes()
        reasons: list[tuple[str, str]] = []
        plate = desc.plate()
        if plate is not None:
            entry = self.hotlists.plate_hit(plate.text, now)
            if entry is not None:
                reasons.append((f"plate:{entry.plate}", entry.reason))
        for rule in self.hotlists.rule_hits(self.camera, desc.kind, attributes, now):
            reasons.append((f"rule:{rule.name}", rule.reason))
        for key, reason in reasons:
            if key in desc.alerted:
                continue
            desc.alerted.add(key)
            if self.on_alert is not None:
                self.on_alert(self._alert(track, desc, key, reason, rgb, now))

    def _alert(self, track: Track, desc: Description, key: str, reason: str, rgb: np.ndarray,
               now: datetime) -> Alert:
        x1, y1, x2, y2 = (int(v) for v in track.box)
        jpeg = encode_jpeg(rgb[max(0, y1):y2, max(0, x1):x2], CROP_JPEG_QUALITY)
        plate = desc.plate()
        return {"kind": "plate" if key.startswith("plate:") else desc.kind,
                "camera": self.camera, "at": now.isoformat(), "track": track.id,
                "matched": key, "reason": reason, "class": desc.kind,
                "attributes": {k: {"value": v, "confidence": round(c, 3)}
                               for k, (v, c) in desc.attributes().items()},
                "plate": {"text": plate.text, "confidence": round(plate.confidence, 3)}
                if plate else None, "box": [x1, y1, x2, y2],
                "crop_jpeg": jpeg}

    def _labels(self) -> list[tuple[np.ndarray, str, bool]]:
        """The counted tracks seen in the last detected frame. A track missed there is kept
        for a few frames in case it reappears, but drawn at its old place it is a ghost: on a
        road, a box on empty tarmac where the car was up to 1.6 s ago."""
        labels = []
        for tracker in self._trackers.values():
            for track in tracker.tracks:
                desc: Description | None = track.state.get("description")
                if desc is None or desc.detections < MIN_HITS or track.misses:
                    continue
                attributes = desc.attributes()
                words = [desc.kind, str(track.id)]
                for name in ("colour", "upper", "lower", "age_group"):
                    value = attributes.get(name, ("unknown", 0.0))[0]
                    if value != "unknown":
                        words.append(f"{name} {value}" if name in ("upper", "lower") else value)
                plate = desc.plate()
                if plate is not None:
                    words.append(plate.text)
                labels.append((track.box, " ".join(words), bool(desc.alerted)))
        return labels

    def tracks(self) -> list[Track]:
        """The live, counted tracks (in memory only)."""
        return [t for tracker in self._trackers.values() for t in tracker.tracks
                if t.state.get("description") and t.state["description"].detections >= MIN_HITS]


def watch_scene(frames: Iterable[Frame], scene: SceneWatch, out: Path | None = None,
                fps: float = 5.0) -> dict[str, Any]:
    """Run `scene` over `frames` (optionally writing an annotated video) until they end or
    Ctrl-C; a summary back: frames, detected frames, counts per class, CPU and wall ms per
    frame, whether it was interrupted, and the source's error when it failed after some
    frames (a file cut short: what came before still counts; one failing at once raises)."""
    writer = AnnotatedWriter(out, fps) if out is not None else None
    start, cpu = time.perf_counter(), time.process_time()
    interrupted, error = False, None
    try:
        for frame in frames:
            labels = scene.process(frame)
            if writer is not None:
                writer.write(frame.rgb, labels)
    except KeyboardInterrupt:  # how a live stream ends: its counts are still the answer
        interrupted = True
    except SourceError as e:
        if not scene.frames:
            raise
        error = str(e)
    finally:
        if writer is not None:
            writer.close()
    per_class: Counter[str] = Counter()
    for (_camera, kind, _minute), n in scene.counts.items():
        per_class[kind] += n
    frames = max(scene.frames, 1)
    return {"camera": scene.camera, "frames": scene.frames, "detected_frames": scene.detected,
            "tracks_per_class": dict(per_class),
            "wall_ms_per_frame": round((time.perf_counter() - start) * 1000 / frames, 1),
            "cpu_ms_per_frame": round((time.process_time() - cpu) * 1000 / frames, 1),
            "interrupted": interrupted, "error": error}
