"""Plate reading details: the CTC decoding drops characters the recogniser is unsure of, a
word whose O a region writes as 0 (ARIZONA → ARIZ0NA) or a number without a letter is not
taken for the plate, and a line clipped by the first scan is read whole once re-read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelens.eval.plates import evaluate_plates
from facelens.scene.ocr import MIN_CHAR_PROB, greedy_ctc
from facelens.scene.plates import plate_candidates, read_plate, rereadings

CHARS = ["", "A", "B", "1"]


def _steps(*rows: tuple[int, float]) -> np.ndarray:
    """(T, 4) probabilities: each step puts `p` on class k and the rest on the blank."""
    probs = np.zeros((len(rows), len(CHARS)), np.float32)
    for t, (k, p) in enumerate(rows):
        probs[t, k] = p
        if k != 0:
            probs[t, 0] = 1 - p
    return probs


def test_greedy_ctc_keeps_runs_and_drops_unsure_characters() -> None:
    unsure = MIN_CHAR_PROB * 0.9
    probs = _steps((1, 0.7), (1, 0.95), (0, 1.0), (1, 0.8), (2, unsure), (0, 1.0), (3, 0.9))
    probs[4] = [0.2, 0.2, unsure, 0.2]  # B is the step's best class, yet unsure
    reading = greedy_ctc(probs, CHARS)
    assert reading.text == "AA1"  # a run is one character; a blank separates two
    assert reading.confidence == pytest.approx((0.95 + 0.8 + 0.9) / 3)  # each run's peak
    assert greedy_ctc(_steps((0, 1.0), (0, 1.0)), CHARS).text == ""


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def _plate(*lines: str) -> np.ndarray:
    """A grey frame with a white plate showing `lines` from the top, in one font."""
    frame = np.full((480, 640, 3), (92, 96, 100), np.uint8)
    cv2.rectangle(frame, (150, 140), (490, 340), (245, 245, 245), -1)
    for i, text in enumerate(lines):
        cv2.putText(frame, text, (175, 220 + 90 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.6,
                    (20, 20, 20), 4, cv2.LINE_AA)
    return frame


def test_a_state_name_is_not_taken_for_the_plate() -> None:
    frame = _plate("7KX4821", "ARIZONA")
    texts = {c.text: c for c in plate_candidates(frame, None, "us")}
    # Both lines are read; the name lies lower (where plates sit) and, written with a 0 as
    # US plates write O, would hold a digit: only what the recogniser read tells them apart.
    assert {"7KX4821", "ARIZ0NA"} <= set(texts)
    assert not texts["ARIZ0NA"].read_digit and texts["7KX4821"].read_digit
    found = read_plate(frame, None, "us")
    assert found is not None and found.text == "7KX4821"


def test_a_number_without_letters_is_not_taken_for_the_plate() -> None:
    # A dealer's phone number below the plate: as large, lower (where plates sit), all digits.
    frame = _plate("KX4821", "5550134")
    texts = {c.text for c in plate_candidates(frame, None, "us")}
    assert {"KX4821", "5550134"} <= texts
    found = read_plate(frame, None, "us")
    assert found is not None and found.text == "KX4821"


def test_a_clipped_line_is_read_whole_in_its_surroundings() -> None:
    frame = _plate("7KX4821")
    (whole,) = (c for c in plate_candidates(frame, None, "us") if c.text == "7KX4821")
    # As a vehicle-wide scan sometimes finds a plate line: its right part only.
    x1, y1, x2, y2 = whole.box
    clipped = replace(whole, text="X4821", box=np.array([x1 + 0.25 * (x2 - x1), y1, x2, y2],
                                                       np.float32))
    (again,) = rereadings(frame, [clipped], "us")
    assert again.text == "7KX4821"
    assert again.box[0] < clipped.box[0]
    # Where the line sits in its vehicle is the first scan's: the surroundings are no vehicle.
    assert (again.height, again.place) == (clipped.height, clipped.place)


def test_eval_reports_each_half(tmp_path: Path) -> None:
    """Two images by name: the first labelled with what it shows, the second not."""
    for name, shown, label in (("a", "KX4821", "KX4821"), ("b", "7TRV52", "QQ1111")):
        cv2.imwrite(str(tmp_path / f"{name}.jpg"), _plate(shown))
        (tmp_path / f"{name}.txt").write_text(f"{name}.jpg 150 140 340 200 {label}\n")
    report = evaluate_plates(tmp_path, region="any", progress=_no_progress)
    assert report["read_rate_halves"] == [1.0, 0.0]
    assert report["read_rate_given_box_halves"] == [1.0, 0.0]
