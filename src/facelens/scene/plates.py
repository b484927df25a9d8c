"""Licence plates: found as text lines inside a vehicle box, read, normalised by region.

Inside the (slightly enlarged) vehicle box the PP-OCR detector finds text lines. Each line is
read over A–Z and 0–9 from four crops (as detected, tighter, looser, contrast-equalised) that
vote. The text is upper-cased, stripped of separators and fixed towards the region's formats
by position (O/0, I/1, Z/2, B/8, S/5, G/6 … swapped where a format wants a letter or a
digit). A line is a candidate when its text has a plate's length; candidates are ranked by
confidence, by fitting a format, by holding a digit (dealer names and slogans rarely do) and a
letter (phone numbers and dates rarely do), by the line's height relative to the box (plate
characters are the largest text on most vehicles) and by its place in the box (plates sit
low). In a whole frame the REREAD_TOP best lines are read once more from their own
surroundings, scanned as when the plate box is given (a vehicle-wide scan clips or splits some
plate lines), and both readings compete. `vote` merges readings of one vehicle over several
frames.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace

import cv2
import numpy as np

from facelens.events.hotlists import PLATE_KEY_CHARS
from facelens.geometry import iou
from facelens.scene.detect import MOTOR_VEHICLES, Objects, detect_objects
from facelens.scene.ocr import TextLine, line_crop, text_detector, text_recogniser

# Per region, plate formats: L a letter, D a digit. A reading is fixed towards a format only
# by swapping look-alike characters (at most MAX_FIXES). A region without formats is read as
# is: US plates follow some hundred formats across states and vanity plates, and a partial
# US table fixed more right readings into wrong ones than the reverse (read rate given the
# plate box 0.716 with a 14-format table, 0.761 without, ../shared/data/plates/us).
FORMATS: dict[str, tuple[str, ...]] = {
    "us": (),
    "eu": ("LLDDDLL", "LLDDLLL", "DDDDLLL", "LLLDDDD", "LDDDDLL"),
    "uk": ("LLDDLLL", "LDDDLLL"),
    "br": ("LLLDLDD", "LLLDDDD"),
    "in": ("LLDDLLDDDD", "LLDDLDDDD"),
    "any": (),
}
O_IS_ZERO = frozenset({"us"})
"""Regions whose plates use one glyph for O and 0 (US states issue them interchangeably;
the letter is written as the digit)."""
MAX_FIXES = 2
TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "B": "8", "S": "5",
            "G": "6", "T": "7", "A": "4"}
TO_LETTER = {"0": "O", "1": "I", "2": "Z", "8": "B", "5": "S", "6": "G", "7": "T", "4": "A"}
MIN_LENGTH, MAX_LENGTH = PLATE_KEY_CHARS[0], PLATE_KEY_CHARS[-1]
VEHICLE_MARGIN = 0.08
"""Part of the box's size added on each side: detector boxes often clip the bumper."""
PLATE_CONTEXT = (0.5, 0.8)
"""Around a plate box, the share of its width and height searched on each side."""
VEHICLE_SCAN, PLATE_SCAN = 960, 640
"""Longer side (px) at which the text detector scans a vehicle box, or a plate box's
surroundings: 960 found 7 more plates in 60 than 640 on ../shared/data/plates/us."""
REREAD_TOP = 2
"""How many of a frame's best lines `read_plate_in_frame` reads again in their PLATE_CONTEXT
surroundings at PLATE_SCAN px. On ../shared/data/plates/us (whole images, all 222, rank with
the letter term) none 191, best 1 193, best 2 194, best 3 194 read; replacing the first
reading instead of adding the second: 190. CPU per whole image (median, every 4th image,
interleaved, loaded host) 757 -> 1205 ms."""


@dataclass(frozen=True)
class PlateReading:
    text: str
    """Upper case letters and digits, separators removed, look-alikes fixed to the format."""
    confidence: float
    """In [0, 1]: the recogniser's mean character probability, lowered when the text fits
    none of the region's formats."""
    box: np.ndarray
    """x1y1x2y2 of the text line in frame pixels."""
    fitted: bool
    """Whether the text fits one of the region's formats."""
    height: float = 0.0
    """The line's height as a share of the searched box's height."""
    place: float = 0.5
    """The line's centre from the searched box's top (0) to its bottom (1)."""
    read_digit: bool = True
    """Whether the recogniser read a digit: before normalising, so a word whose O a region
    writes as 0 (ARIZONA → ARIZ0NA) does not pass for a plate."""


def normalise(raw: str, region: str = "us") -> tuple[str, bool]:
    """Upper-case `raw`, strip everything but letters and digits, and fix look-alikes
    position by position towards the region format needing the fewest changes (at most
    MAX_FIXES; ties keep the text closest to what was read).

    Returns the text and whether it fits a format (always True for a region with none)."""
    text = re.sub(r"[^A-Z0-9]", "", raw.upper())
    if region in O_IS_ZERO:
        text = text.replace("O", "0")
    formats = FORMATS.get(region, ())
    if not formats:
        return text, True
    fits: dict[str, int] = {}
    for pattern in formats:
        fixed = _fit(text, pattern, region in O_IS_ZERO)
        if fixed is not None:
            fits[fixed] = sum(a != b for a, b in zip(text, fixed, strict=True))
    if not fits or min(fits.values()) > MAX_FIXES:
        return text, False
    fewest = min(fits.values())
    closest = [fixed for fixed, changes in fits.items() if changes == fewest]
    # Two formats as close as each other: the swaps are a guess, keep what was read.
    return (closest[0], True) if len(closest) == 1 else (text, True)


def _fit(text: str, pattern: str, zero_is_letter: bool) -> str | None:
    """`text` made to fit `pattern` by look-alike swaps, or None if it cannot."""
    if len(text) != len(pattern):
        return None
    out = []
    for char, kind in zip(text, pattern, strict=True):
        if kind == "D" and not char.isdigit():
            char = TO_DIGIT.get(char, "")
        elif kind == "L" and char.isdigit():
            char = char if char == "0" and zero_is_letter else TO_LETTER.get(char, "")
        if not char:
            return None
        out.append(char)
    return "".join(out)


def read_plate_in_frame(rgb: np.ndarray, region: str = "us",
                        vehicles: Objects | None = None) -> PlateReading | None:
    """The best plate reading on the frame's motor vehicles (`vehicles`: already detected).

    Text lines are looked for inside each vehicle box, scanned at VEHICLE_SCAN px (plates
    are small in a vehicle box), or in the whole frame when no vehicle holds a plate-like
    line; the REREAD_TOP best are read again in their surroundings."""
    if vehicles is None:
        vehicles = detect_objects(rgb)
    boxes = list(vehicles.of(*MOTOR_VEHICLES).boxes)
    candidates = [c for box in boxes
                  for c in plate_candidates(rgb, box, region, scan_side=VEHICLE_SCAN)]
    if not candidates:
        candidates = plate_candidates(rgb, None, region, scan_side=VEHICLE_SCAN)
    candidates += rereadings(rgb, candidates, region)
    return max(candidates, key=_rank) if candidates else None


def read_plate_in_box(rgb: np.ndarray, plate_box: np.ndarray, region: str = "us"
                      ) -> PlateReading | None:
    """The plate inside (about) `plate_box`: searched in a crop PLATE_CONTEXT times its size."""
    return read_plate(rgb, _context(plate_box), region, margin=0.0, scan_side=PLATE_SCAN,
                      reread=0)


def read_plate(rgb: np.ndarray, box: np.ndarray | None = None, region: str = "us", *,
               margin: float = VEHICLE_MARGIN, scan_side: int = VEHICLE_SCAN,
               reread: int = REREAD_TOP) -> PlateReading | None:
    """The most plate-like text line inside `box` (None: the whole frame), its `reread` best
    lines read again in their surroundings (cameras too: `bench street` measured no added CPU
    per frame, 65.0 / 51.8 ms ungated / gated without, 63.7 / 50.3 with)."""
    candidates = plate_candidates(rgb, box, region, margin=margin, scan_side=scan_side)
    candidates += rereadings(rgb, candidates, region, reread)
    return max(candidates, key=_rank) if candidates else None


def _context(box: np.ndarray) -> np.ndarray:
    """`box` grown by PLATE_CONTEXT of its width and height on each side."""
    x1, y1, x2, y2 = box
    grow_w, grow_h = (x2 - x1) * PLATE_CONTEXT[0], (y2 - y1) * PLATE_CONTEXT[1]
    return np.array([x1 - grow_w, y1 - grow_h, x2 + grow_w, y2 + grow_h], np.float32)


def rereadings(rgb: np.ndarray, candidates: list[PlateReading], region: str = "us",
               top: int = REREAD_TOP) -> list[PlateReading]:
    """The `top` best-ranked candidates (one per line: overlapping vehicle boxes find a line
    twice) read again from their PLATE_CONTEXT surroundings scanned at PLATE_SCAN px: the line
    there that overlaps the candidate most, keeping the candidate's height and place in its
    vehicle (the surroundings would make every line look large)."""
    lines: list[PlateReading] = []
    for candidate in sorted(candidates, key=_rank, reverse=True):
        if len(lines) == top:
            break
        if all(_overlap(candidate.box, seen.box) < 0.5 for seen in lines):
            lines.append(candidate)
    found = []
    for line in lines:
        local = plate_candidates(rgb, _context(line.box), region, margin=0.0,
                                 scan_side=PLATE_SCAN)
        if not local:
            continue
        same = max(local, key=lambda c: _overlap(c.box, line.box))
        if _overlap(same.box, line.box) >= 0.2:
            found.append(replace(line, text=same.text, confidence=same.confidence,
                                 box=same.box, fitted=same.fitted,
                                 read_digit=same.read_digit))
    return found


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x1y1x2y2 boxes (geometry.iou, one pair)."""
    return float(iou(np.asarray(a)[None], np.asarray(b)[None])[0, 0])


def plate_candidates(rgb: np.ndarray, box: np.ndarray | None = None, region: str = "us", *,
                     margin: float = VEHICLE_MARGIN, scan_side: int = VEHICLE_SCAN
                     ) -> list[PlateReading]:
    """Every text line in `box` (grown by `margin` of its size on each side, scanned with its
    longer side at `scan_side` px) whose reading has a plate's length, in frame pixels."""
    h, w = rgb.shape[:2]
    if box is None:
        x1, y1, x2, y2 = 0, 0, w, h
    else:
        bw, bh = box[2] - box[0], box[3] - box[1]
        x1 = int(max(0, box[0] - margin * bw))
        y1 = int(max(0, box[1] - margin * bh))
        x2 = int(min(w, box[2] + margin * bw))
        y2 = int(min(h, box[3] + margin * bh))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return []
    bgr = cv2.cvtColor(rgb[y1:y2, x1:x2], cv2.COLOR_RGB2BGR)
    lines = [line for line in text_detector()(bgr, scan_side) if _plate_shaped(line)]
    crops = [crop for line in lines for crop in _line_variants(bgr, line)]
    readings = text_recogniser()(crops)
    per_line = len(crops) // max(len(lines), 1)
    found = []
    for i, line in enumerate(lines):
        line_box = line.box + np.array([x1, y1, x1, y1], np.float32)
        height = line.height / (y2 - y1)
        low = ((line_box[1] + line_box[3]) / 2 - y1) / (y2 - y1)
        variants = []
        for reading in readings[i * per_line:(i + 1) * per_line]:
            text, fitted = normalise(reading.text, region)
            if MIN_LENGTH <= len(text) <= MAX_LENGTH:
                variants.append(PlateReading(
                    text, reading.confidence * (1.0 if fitted else 0.8), line_box, fitted,
                    height, low, any(c.isdigit() for c in reading.text)))
        voted = vote(variants)
        if voted is not None:
            found.append(voted)
    return found


CROP_SCALES = (1.0, 0.85, 1.2)
"""Each line is read from its detected box, from one a little tighter and one a little
looser, and once more with its contrast equalised (CLAHE); the readings vote, so a frame
border, a cut character or glare sways only one of them."""


def _line_variants(bgr: np.ndarray, line: TextLine) -> list[np.ndarray]:
    crops = [line_crop(bgr, _scaled(line.corners, f)) for f in CROP_SCALES]
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))  # stateful: one per call
    equalised = clahe.apply(cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY))
    return [*crops, cv2.cvtColor(equalised, cv2.COLOR_GRAY2BGR)]


def _scaled(corners: np.ndarray, factor: float) -> np.ndarray:
    """The quadrilateral grown (factor > 1) or shrunk about its centre, height more than
    width: detected lines err mostly in height."""
    centre = corners.mean(axis=0)
    offset = corners - centre
    return centre + offset * np.array([1 + (factor - 1) / 2, factor], np.float32)


def _plate_shaped(line: TextLine) -> bool:
    """Plate lines are wider than tall (a vertical line would be 90° off)."""
    x1, y1, x2, y2 = line.box
    return (x2 - x1) >= 1.2 * (y2 - y1)


def _rank(reading: PlateReading) -> float:
    """How plate-like a candidate is (weights chosen by eye, not fitted)."""
    usual_length = 5 <= len(reading.text) <= 8
    # Names and slogans rarely hold a digit; phone numbers, dates and addresses no letter
    # (the letter term: whole images of ../shared/data/plates/us 188 -> 191 of 222 read,
    # halves 94/94 -> 96/95, weights 0.05-0.3 gave 190-191; its 8 all-digit plates still read).
    holds_letter = any(c.isalpha() for c in reading.text)
    return (reading.confidence + 0.3 * float(reading.fitted) + 0.3 * float(reading.read_digit)
            + 0.2 * float(holds_letter) + 0.2 * float(usual_length) + 2.0 * reading.height
            + 0.1 * reading.place)


def vote(readings: list[PlateReading]) -> PlateReading | None:
    """One reading from several (of one vehicle over frames, or of one line's crops): the
    text with the largest sum of confidences; its confidence is its best reading's, times
    that sum's share of all readings' confidences."""
    if not readings:
        return None
    totals: dict[str, float] = defaultdict(float)
    for r in readings:
        totals[r.text] += r.confidence
    text = max(totals, key=lambda t: totals[t])
    best = max((r for r in readings if r.text == text), key=lambda r: r.confidence)
    share = totals[text] / max(sum(totals.values()), 1e-9)
    return PlateReading(text, float(share * best.confidence), best.box, best.fitted,
                        best.height, best.place, best.read_digit)
