"""`facelens eval plates FOLDER`: plate reading on the openalpr benchmark layout.

Each `<id>.jpg` has a `<id>.txt` beside it: `file x y w h text` (whitespace-separated), one
plate. Two rates separate finding from reading:

- `read_rate`: the whole image goes through the street pipeline (vehicle detector, text
  lines inside each vehicle, the most plate-like reading); exact match of the normalised text.
- `read_rate_given_box`: the ground-truth plate box is given; the reader runs on it alone.

Times are medians per image: wall clock, and the process's CPU time (the models run on one
thread each, so on a busy machine the CPU time is the figure an idle one would show).

A reading counts when it equals the label upper-cased with separators removed. Both rates
are also given for the first and the second half of the images (by name): a change tuned on
one half should hold on the other.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import FacelensError
from facelens.scene.plates import read_plate_in_box, read_plate_in_frame
from facelens.vision.decode import load_image

Progress = Any


@dataclass(frozen=True)
class PlateLabel:
    image: Path
    box: np.ndarray
    """x1y1x2y2 of the plate."""
    text: str


LABEL_FORMAT = "<image> <x> <y> <w> <h> <text>"


def load_labels(folder: Path) -> list[PlateLabel]:
    """The labelled images of an openalpr-layout folder, sorted by name; bad input (exit 2)
    when there are none, a label is not `LABEL_FORMAT` or its image is missing, before any
    image is read."""
    labels = []
    for label_file in sorted(folder.glob("*.txt")):
        fields = label_file.read_text(errors="replace").split()
        try:
            x, y, w, h = (float(v) for v in fields[1:5])
            image, text = folder / fields[0], fields[5]
        except (ValueError, IndexError):
            raise FacelensError(f"{label_file}: not a plate label ({LABEL_FORMAT})") from None
        if not image.is_file():
            raise FacelensError(f"{label_file}: its image {fields[0]} is not a file in "
                                f"{folder}")
        labels.append(PlateLabel(image, np.array([x, y, x + w, y + h], np.float32), text))
    if not labels:
        raise FacelensError(f"{folder}: no plate labels (<id>.jpg with <id>.txt holding "
                            f"{LABEL_FORMAT})")
    return labels


def error_kind(truth: str, read: str) -> str:
    """What went wrong, in a few words: the reading's relation to the truth."""
    if not read:
        return "nothing read"
    if read in truth or truth in read:
        return "characters missing or extra"
    if _shared(truth, read) < 0.5:
        return "other text read (dealer, state, sticker)"
    if len(read) != len(truth):
        return "length differs"
    wrong = [(t, r) for t, r in zip(truth, read, strict=True) if t != r]
    if all(frozenset(pair) in LOOKALIKES for pair in wrong):
        return "look-alike characters"
    return f"{len(wrong)} character(s) misread"


LOOKALIKES = {frozenset(p) for p in ("O0", "I1", "Z2", "B8", "S5", "G6", "D0", "Q0", "T7",
                                     "A4", "L1", "MN", "HM", "EF", "UV", "YV")}


def _halves(hits: list[bool]) -> list[float]:
    """The hit rate over the first and over the second half of `hits`."""
    middle = len(hits) // 2
    return [round(sum(part) / max(len(part), 1), 4) for part in (hits[:middle], hits[middle:])]


def _shared(a: str, b: str) -> float:
    return sum((Counter(a) & Counter(b)).values()) / max(len(a), 1)


def evaluate_plates(folder: Path, *, region: str = "us", limit: int | None = None,
                    progress: Progress) -> dict[str, Any]:
    """read_rate, read_rate_given_box, ms per image and the error kinds on `folder`."""
    labels = load_labels(folder)[:limit]
    advance = progress("plates", len(labels))
    whole_ok: list[bool] = []
    box_ok: list[bool] = []
    kinds: Counter[str] = Counter()
    whole_ms: list[float] = []
    whole_cpu_ms: list[float] = []
    box_ms: list[float] = []
    for label in labels:
        rgb = load_image(label.image)
        truth = re.sub(r"[^A-Z0-9]", "", label.text.upper())
        start, cpu = time.perf_counter(), time.process_time()
        whole = read_plate_in_frame(rgb, region=region)
        whole_ms.append((time.perf_counter() - start) * 1000)
        whole_cpu_ms.append((time.process_time() - cpu) * 1000)
        start = time.perf_counter()
        given = read_plate_in_box(rgb, label.box, region=region)
        box_ms.append((time.perf_counter() - start) * 1000)
        read = whole.text if whole else ""
        whole_ok.append(read == truth)
        box_ok.append((given.text if given else "") == truth)
        if read != truth:
            kinds[error_kind(truth, read)] += 1
        advance(1)
    count = max(len(labels), 1)
    return {
        "folder": str(folder), "images": len(labels), "region": region,
        "read_rate": round(sum(whole_ok) / count, 4),
        "read_rate_given_box": round(sum(box_ok) / count, 4),
        "read_rate_halves": _halves(whole_ok),
        "read_rate_given_box_halves": _halves(box_ok),
        "ms_per_image": round(float(np.median(whole_ms)) if whole_ms else 0.0, 1),
        "cpu_ms_per_image": round(float(np.median(whole_cpu_ms)) if whole_cpu_ms else 0.0, 1),
        "ms_per_image_given_box": round(float(np.median(box_ms)) if box_ms else 0.0, 1),
        "errors": dict(kinds.most_common()),
    }
