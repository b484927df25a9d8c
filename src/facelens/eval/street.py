"""`facelens eval street FOLDER`: people and vehicles against frames labelled by eye.

The labels (facelens/data/street_labels.json, with their method) hold, for 102 frames of
the clips in ../shared/data/street, the count of people and of each vehicle type, the colours
of the clearly seen vehicles (largest first) and the clothing colours of single people. Each
labelled frame is detected on its own (no tracking) and compared:

- count error: mean absolute difference between detected and labelled counts, per class;
- detection recall: per class, the sum over frames of min(detected, labelled) over the sum
  of labelled (a count-based recall: an upper bound, boxes are not matched);
- extra boxes: per class, the sum over frames of detections beyond the labelled count;
- colour accuracy: the k largest detected vehicles' colours against the k labelled ones, as
  multisets (the share of labelled colours found);
- clothing accuracy: the largest person's upper and lower colours where labelled;
- adult/child (facelens/data/street_age_labels.json, with its method): each labelled person
  box is matched to the detected person box it overlaps most (IoU ≥ 0.5), BlazePose runs on it
  and `age_group` answers; reported are the answers on whole bodies (right, wrong, unknown)
  and how many of the bodies not whole were wrongly given an answer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np

from facelens.errors import FacelensError
from facelens.geometry import iou
from facelens.scene.attributes import UNKNOWN, age_group, describe_person, describe_vehicle
from facelens.scene.detect import STREET_THRESHOLDS, THRESHOLD, VEHICLES, detect_street
from facelens.scene.pose import body_pose

LABELS = Path(__file__).parent.parent / "data" / "street_labels.json"
AGE_LABELS = LABELS.with_name("street_age_labels.json")
CLASSES = ("person", "bicycle", "car", "bus", "truck", "motorcycle")
Progress = Any


def labelled_frames(folder: Path, labels: list[dict[str, Any]]
                    ) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(label, RGB frame) for every label (several may share a frame), decoding each clip once."""
    out = []
    for clip in dict.fromkeys(label["clip"] for label in labels):
        wanted: dict[int, list[dict[str, Any]]] = {}
        for label in labels:
            if label["clip"] == clip:
                wanted.setdefault(label["frame"], []).append(label)
        try:
            container = av.open(str(folder / clip))
        except av.FFmpegError as e:
            raise FacelensError(f"{folder / clip}: not a video ({e.strerror})") from None
        with container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    out.extend((label, rgb) for label in wanted[i])
    return out


def evaluate_street(folder: Path, *, side: int | None, progress: Progress) -> dict[str, Any]:
    """The report (see the module's doc) with the detector's input `side`
    (settings.street_detect_side)."""
    labels = json.loads(LABELS.read_text())["frames"]
    clips = {label["clip"] for label in labels}
    if missing := sorted(c for c in clips if not (folder / c).is_file()):
        raise FacelensError(f"{folder}: {len(missing)} of the {len(clips)} labelled clips are "
                            f"not in it ({', '.join(missing)}): give ../shared/data/street")
    frames = labelled_frames(folder, labels)
    advance = progress("street frames", len(frames))
    errors: dict[str, list[int]] = {c: [] for c in CLASSES}
    found_sum: Counter[str] = Counter()
    label_sum: Counter[str] = Counter()
    extra_sum: Counter[str] = Counter()
    colours_right = colours_total = clothes_right = clothes_total = 0
    confusions: Counter[str] = Counter()
    for label, rgb in frames:
        objects = detect_street(rgb, side)
        detected = Counter(objects.names)
        for cls in CLASSES:
            want, got = label["counts"][cls], detected.get(cls, 0)
            errors[cls].append(abs(got - want))
            found_sum[cls] += min(got, want)
            label_sum[cls] += want
            extra_sum[cls] += max(got - want, 0)
        vehicles = objects.of(*VEHICLES)
        areas = np.prod(vehicles.boxes[:, 2:] - vehicles.boxes[:, :2], axis=1)
        wanted = label["vehicle_colours"]
        order = np.argsort(-areas)[:len(wanted)]
        seen = Counter(describe_vehicle(rgb, vehicles.boxes[i], vehicles.names[i],
                                        float(vehicles.scores[i]))["colour"].value
                       for i in order)
        colours_right += sum((seen & Counter(wanted)).values())
        colours_total += len(wanted)
        for miss in (Counter(wanted) - seen):
            confusions[f"{miss} missed"] += 1
        clothes_right, clothes_total = _clothes(rgb, objects, label, clothes_right,
                                                clothes_total)
        advance(1)
    n = max(len(frames), 1)
    return {
        "folder": str(folder), "frames": len(frames), "detect_side": side,
        "thresholds": {c: STREET_THRESHOLDS.get(c, THRESHOLD) for c in CLASSES},
        "count_mae": {c: round(sum(e) / n, 3) for c, e in errors.items()},
        "count_mae_people": round(sum(errors["person"]) / n, 3),
        "count_mae_vehicles": round(sum(sum(errors[c]) for c in CLASSES[1:]) / n, 3),
        "labelled": dict(label_sum),
        "count_recall": {c: round(found_sum[c] / label_sum[c], 3)
                         for c in CLASSES if label_sum[c]},
        "extra_boxes": {c: extra_sum[c] for c in CLASSES},
        "colour_accuracy": round(colours_right / max(colours_total, 1), 3),
        "colours_labelled": colours_total,
        "colour_misses": dict(confusions.most_common()),
        "clothing_accuracy": round(clothes_right / max(clothes_total, 1), 3),
        "clothing_labelled": clothes_total,
        "age_group": evaluate_ages(folder, side),
    }


def evaluate_ages(folder: Path, side: int | None = None) -> dict[str, Any]:
    """Adult/child against the labelled person boxes (see the module's doc)."""
    people = json.loads(AGE_LABELS.read_text())["people"]
    outcomes: Counter[str] = Counter()
    for label, rgb in labelled_frames(folder, people):
        boxes = detect_street(rgb, side).of("person").boxes
        overlaps = iou(np.asarray([label["box"]], np.float32), boxes)[0]
        if len(boxes) == 0 or overlaps.max() < 0.5:
            outcomes["not detected"] += 1
            continue
        box = boxes[int(overlaps.argmax())]
        answer = age_group(body_pose(rgb, box), box, (rgb.shape[1], rgb.shape[0])).value
        if not label["whole"]:
            outcomes["not whole, answered" if answer != UNKNOWN else "not whole, unknown"] += 1
        elif answer == UNKNOWN:
            outcomes[f"whole {label['age']}, unknown"] += 1
        else:
            outcomes[f"whole {label['age']}, {'right' if answer == label['age'] else 'wrong'}"] += 1
    return {"labelled": len(people), "outcomes": dict(sorted(outcomes.items()))}


def _clothes(rgb: np.ndarray, objects: Any, label: dict[str, Any], right: int, total: int
             ) -> tuple[int, int]:
    """Running totals after checking the largest person's upper and lower colours."""
    if not label["clothing"]:
        return right, total
    people = objects.of("person")
    if len(people) == 0:
        return right, total + sum(v != UNKNOWN for v in label["clothing"][0])
    areas = np.prod(people.boxes[:, 2:] - people.boxes[:, :2], axis=1)
    described = describe_person(rgb, people.boxes[int(areas.argmax())], rgb.shape[0])
    for part, want in zip(("upper", "lower"), label["clothing"][0], strict=True):
        if want != UNKNOWN:
            total += 1
            right += described[part].value == want
    return right, total
