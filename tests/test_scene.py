"""The street layer: objects (NanoDet) on the fixture photos, plates rendered here and read
by PP-OCR, the region formats, the vote over frames, `facelens eval plates` on a folder
written here, and its read rate on a sample of ../shared/data/plates/us."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from facelens.cli.scene import eval_plates, objects
from facelens.eval.plates import error_kind, evaluate_plates, load_labels
from facelens.scene.detect import Objects, detect_objects
from facelens.scene.plates import PlateReading, normalise, read_plate, read_plate_in_box, vote

US_SAMPLE = 30
US_SAMPLE_FLOORS = {"read_rate": 24 / 30, "read_rate_given_box": 27 / 30}
"""Measured on the first 30 images (by name) with the two best lines re-read in their
surroundings (AMD EPYC AVX2): 26/30 read and 28/30 given the box (24 and 28 before the re-read). The
floors are two and one below: a reader change that loses more fails here."""


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def plate_photo(text: str, size: tuple[int, int] = (640, 480)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB street-grey frame with a white plate showing `text`; returns it and the box."""
    w, h = size
    frame = np.full((h, w, 3), (92, 96, 100), np.uint8)
    x1, y1, x2, y2 = w // 2 - 130, h // 2 - 40, w // 2 + 130, h // 2 + 40
    cv2.rectangle(frame, (x1, y1), (x2, y2), (245, 245, 245), -1)
    cv2.rectangle(frame, (x1 + 4, y1 + 4), (x2 - 4, y2 - 4), (30, 30, 30), 2)
    cv2.putText(frame, text, (x1 + 18, y2 - 20), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20),
                4, cv2.LINE_AA)
    return frame, np.array([x1, y1, x2, y2], np.float32)


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("abc-1234", "us", ("ABC1234", True)),
    ("7 ABC 123", "us", ("7ABC123", True)),
    ("CHOP8Y", "us", ("CH0P8Y", True)),         # US plates write the letter O as 0
    ("R8Z0503", "us", ("R8Z0503", True)),       # no US format table: read as is
    ("AB12CDE", "uk", ("AB12CDE", True)),
    ("AB12CD5", "uk", ("AB12CDS", True)),       # 5 in a letter place
    ("AB1ZCDE", "uk", ("AB12CDE", True)),       # Z in a digit place
    ("ABCDEFG", "uk", ("ABCDEFG", False)),      # no format within MAX_FIXES swaps
    ("ABC1D23", "br", ("ABC1D23", True)),       # Mercosul
    ("A8C1234", "br", ("ABC1234", True)),
    ("AB123CD", "eu", ("AB123CD", True)),
    ("AB1Z3CD", "eu", ("AB123CD", True)),       # Z in a digit place
    ("AB12CD34", "any", ("AB12CD34", True)),
])
def test_normalise_fixes_lookalikes_by_position(raw: str, region: str,
                                                expected: tuple[str, bool]) -> None:
    assert normalise(raw, region) == expected


def test_vote_prefers_the_text_read_most_confidently() -> None:
    box = np.zeros(4, np.float32)
    readings = [PlateReading("ABC123", 0.9, box, True), PlateReading("A8C123", 0.95, box, True),
                PlateReading("ABC123", 0.8, box, True)]
    voted = vote(readings)
    assert voted is not None and voted.text == "ABC123"
    assert 0.5 < voted.confidence < 0.9
    assert vote([]) is None


def test_error_kinds() -> None:
    assert error_kind("ABC123", "") == "nothing read"
    assert error_kind("ABC123", "A8C123") == "look-alike characters"
    assert error_kind("ABC123", "ABC1234") == "characters missing or extra"
    assert error_kind("ABC123", "PENSKE") == "other text read (dealer, state, sticker)"


def test_people_found_in_fixture_photos(load_rgb: Callable[[str], np.ndarray]) -> None:
    for name, people in (("two_people.jpg", 2), ("kit_with_rose.jpg", 2), ("obama.jpg", 1)):
        found = detect_objects(load_rgb(name))
        assert isinstance(found, Objects)
        strong = found.of("person").scores >= 0.6
        assert int(strong.sum()) == people, name
    found = detect_objects(load_rgb("two_people.jpg")).of("person")
    h, w = load_rgb("two_people.jpg").shape[:2]
    assert (found.boxes[:, :2] >= 0).all() and (found.boxes[:, 2] <= w).all()
    assert (found.boxes[:, 3] <= h).all()
    assert found.scores.tolist() == sorted(found.scores.tolist(), reverse=True)


def test_a_rendered_plate_is_read() -> None:
    frame, box = plate_photo("KX 4821")
    whole = read_plate(frame, None, region="any")
    assert whole is not None and whole.text == "KX4821"
    assert 0.5 < whole.confidence <= 1.0
    given = read_plate_in_box(frame, box, region="any")
    assert given is not None and given.text == "KX4821"
    x1, y1, x2, y2 = given.box
    assert box[0] - 5 <= x1 < x2 <= box[2] + 5 and box[1] - 5 <= y1 < y2 <= box[3] + 5


def _openalpr_folder(folder: Path, plates: dict[str, str]) -> Path:
    for image_id, text in plates.items():
        frame, box = plate_photo(text)
        cv2.imwrite(str(folder / f"{image_id}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        x1, y1, x2, y2 = box.astype(int)
        (folder / f"{image_id}.txt").write_text(
            f"{image_id}.jpg\t{x1}\t{y1}\t{x2 - x1}\t{y2 - y1}\t{text.replace(' ', '')}\n")
    return folder


def test_eval_plates_on_an_openalpr_folder(tmp_path: Path) -> None:
    folder = _openalpr_folder(tmp_path, {"a": "KX 4821", "b": "7TRV 52"})
    labels = load_labels(folder)
    assert [label.text for label in labels] == ["KX4821", "7TRV52"]

    report = evaluate_plates(folder, region="any", progress=_no_progress)

    assert report["images"] == 2
    assert report["read_rate_given_box"] == 1.0
    assert report["read_rate"] == 1.0  # no vehicle: the whole frame is searched
    assert report["ms_per_image"] > 0 and report["errors"] == {}


def test_cli_eval_plates_and_objects(tmp_path: Path, fixtures_dir: Path) -> None:
    app = typer.Typer()
    app.command("plates")(eval_plates)
    app.command("objects")(objects)
    (tmp_path / "set").mkdir()
    folder = _openalpr_folder(tmp_path / "set", {"a": "KX 4821"})
    runner = CliRunner()
    result = runner.invoke(app, ["plates", str(folder), "--region", "any", "--json-out",
                                 str(tmp_path / "out" / "plates.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "plates.json").is_file()
    assert runner.invoke(app, ["plates", str(tmp_path / "absent")]).exit_code == 2
    result = runner.invoke(app, ["objects", str(fixtures_dir / "two_people.jpg"), "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.count('"person"') >= 2


def test_read_rate_on_us_plates_sample(shared_data: Path) -> None:
    folder = shared_data / "plates" / "us"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    report = evaluate_plates(folder, region="us", limit=US_SAMPLE, progress=_no_progress)
    assert report["images"] == US_SAMPLE
    for rate, floor in US_SAMPLE_FLOORS.items():
        assert report[rate] >= floor, (rate, report)
