"""The Python API (`import facelens`) on a user's slips: wrong argument values and oddly typed
images fail with a facelens error that says what to pass, before any model runs, never with
an internal error or a silent wrong answer."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facelens
from facelens.errors import BadImageError, FacelensError, ImageTooLargeError, ModelMissingError
from facelens.vision.decode import load_image

LoadRgb = Callable[[str], np.ndarray]


@pytest.mark.parametrize("far", [0.6, 2.0, math.inf, math.nan, 0.0, -1e-3])
def test_verify_refuses_a_far_that_is_no_false_accept_rate(fixtures_dir: Path, far: float
                                                           ) -> None:
    # 0.6 is face_recognition's tolerance: it was decided at FAR 1e-2 without a word.
    with pytest.raises(FacelensError, match=r"far must be a false-accept rate in \(0, 0.1\]"):
        facelens.verify(fixtures_dir / "obama.jpg", fixtures_dir / "obama2.jpg", far=far)


@pytest.mark.parametrize("verb", ["detect", "analyze"])
def test_an_unknown_detector_is_a_facelens_error_naming_the_choices(fixtures_dir: Path, verb: str
                                                                    ) -> None:
    with pytest.raises(FacelensError, match=r"unknown detector 'mtcnn' \(yunet, centerface\)"):
        getattr(facelens, verb)(fixtures_dir / "obama.jpg", detector="mtcnn")


@pytest.mark.parametrize("verb", ["embed", "verify", "compare"])
def test_an_unknown_embedder_is_a_facelens_error_naming_the_choices(fixtures_dir: Path, verb: str
                                                                    ) -> None:
    # verify said "has no calibrated thresholds; run `facelens eval lfw`" (exit code 3, a
    # missing model), embed raised a bare ValueError.
    images = [fixtures_dir / "obama.jpg"] * (1 if verb == "embed" else 2)
    with pytest.raises(FacelensError, match=r"unknown embedder 'arcface' \(sface, ") as raised:
        getattr(facelens, verb)(*images, embedder="arcface")
    assert not isinstance(raised.value, ModelMissingError)


def _8bit_in_16bit(rgb: np.ndarray) -> list[np.ndarray | Image.Image]:
    """8-bit pixels in 16-bit containers: cast up (after "unsupported dtype int64, accepted:
    uint8, uint16, float"), or a PIL image converted to mode I or I;16."""
    grey = Image.fromarray(rgb).convert("L")
    return [rgb.astype(np.uint16), grey.convert("I"), grey.convert("I;16")]


@pytest.mark.parametrize("index", range(3))
def test_8bit_pixels_in_16_bits_are_refused_not_seen_black(load_rgb: LoadRgb, index: int) -> None:
    # Shifted down by 8 bits they turned black: no face, without a word.
    image = _8bit_in_16bit(load_rgb("obama.jpg"))[index]
    with pytest.raises(BadImageError, match=r"values only reach 255 of 65535: 8-bit pixels"):
        facelens.detect(image)


def test_16bit_images_and_black_frames_still_load(load_rgb: LoadRgb) -> None:
    rgb = load_rgb("obama.jpg")
    assert len(facelens.detect(rgb.astype(np.uint16) * 257)) == 1
    assert facelens.detect(np.zeros((64, 64), np.uint16)) == []


def test_verify_on_faces_without_the_embedding_is_a_facelens_error(fixtures_dir: Path) -> None:
    # detect's faces carry no embedding: a bare ValueError came out of the API.
    detected = [facelens.detect(fixtures_dir / name)[0] for name in ("obama.jpg", "obama2.jpg")]
    with pytest.raises(FacelensError, match=r"carries no fusion embedding \(it has none\): pass "
                                            r"the image, or embed it with embedder='fusion'"):
        facelens.verify(*detected, embedder="fusion")


def test_a_float64_image_costs_less_than_its_own_size_to_convert() -> None:
    # arr * 255, then np.rint: two float64 copies, 1.8 GB more for a 40 MP frame.
    floats = np.random.default_rng(0).random((1000, 1000, 3))
    tracemalloc.start()
    try:
        rgb = load_image(floats)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.75 * floats.nbytes, f"{peak / 2**20:.0f} MB for {floats.nbytes / 2**20:.0f}"
    assert np.array_equal(rgb[:, :, 0], np.rint(floats[:, :, 0] * 255).astype(np.uint8))


def test_the_readme_engine_line_works_right_after_import() -> None:
    # `import facelens` then facelens.api.Engine(...) raised AttributeError unless a verb had
    # already imported facelens.api.
    line = "import facelens; facelens.api.Engine(facelens.settings.Settings(detector='centerface'))"
    done = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_open_binary_file_is_an_image_source(fixtures_dir: Path, tmp_path: Path) -> None:
    """face_recognition's users pass open files and BytesIO: read (at most the byte limit)
    from where the file stands; a text-mode file or an over-long stream is refused."""
    photo = fixtures_dir / "obama.jpg"
    expected = load_image(photo)
    with photo.open("rb") as opened:
        assert np.array_equal(load_image(opened), expected)
    assert np.array_equal(load_image(io.BytesIO(photo.read_bytes())), expected)
    assert len(facelens.detect(io.BytesIO(photo.read_bytes()))) == 1
    with photo.open("r", encoding="latin-1") as text, pytest.raises(BadImageError, match="'rb'"):
        load_image(text)  # type: ignore[arg-type]
    with pytest.raises(ImageTooLargeError):
        load_image(io.BytesIO(photo.read_bytes()), max_bytes=1000)
    with pytest.raises(BadImageError, match="empty file"):
        load_image(io.BytesIO(b""))
