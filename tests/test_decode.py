"""load_image on real files written with PIL in tmp_path; bad input = one-line BadImageError."""

import io
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelens.errors import BadImageError, UnsupportedImageError
from facelens.vision.decode import ALLOWED_FORMATS, MAX_FILE_BYTES, load_image


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(source: object, match: str, **kwargs: object) -> str:
    """Assert load_image refuses `source` with a one-line message matching `match` (for a
    file, after the file's name it starts with: one bad photo among many must be findable)."""
    with pytest.raises(BadImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    if isinstance(source, Path):
        name = str(source) if str(source).isprintable() else repr(str(source))
        assert name in message
        message = message.removeprefix(f"{name}: ")
    assert re.search(match, message), (match, message)
    assert "\n" not in message and "\r" not in message
    return message


def check_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous and out.flags.writeable


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(w: int, h: int, depth: int, colour_type: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# --- bad files --------------------------------------------------------------------------------


def test_text_file_renamed_jpg(tmp_path: Path) -> None:
    path = write(tmp_path, "photo.jpg", b"this is not an image, only some text\n" * 20)
    refused(path, r"^not an image \(or an unsupported format\)$")


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = encode(Image.fromarray(noise(200, 300)), "JPEG", quality=90)
    path = write(tmp_path, "cut.jpg", data[: len(data) // 2])
    refused(path, r"^truncated or corrupt image: ")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "BMP"])
def test_other_truncated_formats(fmt: str) -> None:
    data = encode(Image.fromarray(noise(200, 300)), fmt)
    refused(data[: len(data) // 2], r"^truncated or corrupt image: ")


def test_corrupt_header_of_an_allowed_format() -> None:
    refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, r"^truncated or corrupt PNG header$")


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    refused(write(tmp_path, "empty.png", b""), r"^empty file$")
    refused(b"", r"^empty file$")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    refused(tmp_path / "nope.jpg", r"^no such file: .*nope\.jpg$")
    refused(str(tmp_path / "nope" / "deeper.jpg"), r"^no such file: ")
    refused(tmp_path, r"^is a directory")


def test_path_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    refused(tmp_path / "two\nlines.jpg", r"^no such file: '.*two\\nlines\.jpg'$")


def huge_png_header() -> bytes:
    """A valid 1x1 PNG whose IHDR (fixed CRC and all) claims 60000x60000."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 60000, 60000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_pixel_bomb_refused_from_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.png", huge_png_header())
    start = time.perf_counter()
    # PIL's own guard (2 * MAX_IMAGE_PIXELS) fires inside Image.open here; we reword it.
    refused(path, r"^image is 3600\.0 MP, over the 40 MP limit$")
    assert time.perf_counter() - start < 1.0


def test_pixel_bomb_refused_even_with_pil_guard_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what some libraries do globally
    path = write(tmp_path, "bomb.png", huge_png_header())
    start = time.perf_counter()
    refused(path, r"^image is 60000x60000 = 3600\.0 MP, over the 40 MP limit$")
    assert time.perf_counter() - start < 1.0


def test_pixel_limit_argument() -> None:
    data = encode(Image.new("RGB", (300, 200)), "PNG")
    refused(data, r"^image is 300x200 = 0\.1 MP, over the 0\.05 MP limit$", max_pixels=50_000)
    assert load_image(data, max_pixels=60_000).shape == (200, 300, 3)


def test_a_strip_thinner_than_one_hundredth_is_refused() -> None:
    # 16000x1 reached the detector, which shrank its 1 px side to 0 (a 500 from the service).
    refused(encode(Image.new("RGB", (16_000, 1)), "PNG"), r"^image is 16000x1: its sides are "
            r"over 100:1 apart$")
    refused(np.zeros((2001, 20, 3), np.uint8), r"^image is 20x2001: ")
    assert load_image(encode(Image.new("L", (2000, 20)), "PNG")).shape == (20, 2000, 3)


def test_file_over_byte_limit(tmp_path: Path) -> None:
    data = encode(Image.fromarray(noise(64, 64)), "PNG")
    path = write(tmp_path, "big.png", data)
    refused(path, rf"^file is {len(data):,} bytes, over the 1,000 bytes limit$", max_bytes=1000)
    refused(data, r"over the 1,000 bytes limit$", max_bytes=1000)
    assert load_image(path, max_bytes=len(data)).shape == (64, 64, 3)


def test_byte_limit_checked_from_stat_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "sparse.jpg"
    with path.open("wb") as f:  # sparse: 60.2 MB on paper, nothing on disk
        f.truncate(int(60.2 * 1024 * 1024))
    refused(path, r"^file is 60\.2 MB, over the 50 MB limit$")
    assert MAX_FILE_BYTES == 50 * 1024 * 1024


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "PPM"])
def test_unsupported_format_refused(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, f"img.{fmt.lower()}", encode(Image.new("RGB", (16, 16)), fmt))
    message = refused(path, rf"^unsupported format {fmt} \(accepted: ")
    assert message.endswith("(accepted: " + ", ".join(sorted(ALLOWED_FORMATS)) + ")")


def test_an_iphone_heic_is_named_unsupported() -> None:
    # QA: no plugin reads HEIF, so a HEIC upload was "not an image" (422), not a 415.
    box = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    with pytest.raises(UnsupportedImageError, match=r"^unsupported format HEIF \(accepted: "):
        load_image(box + bytes(200))


def test_formats_argument_narrows_what_is_accepted() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    refused(data, r"^unsupported format PNG \(accepted: JPEG\)$", formats=frozenset({"JPEG"}))


def test_unsupported_source_type() -> None:
    refused(12345, r"^cannot read an image from a int$")


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about odd TIFF tags
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "BMP"])
def test_mangled_bytes_only_ever_raise_bad_image_error(fmt: str) -> None:
    good = encode(Image.fromarray(noise(24, 32)), fmt)
    rng = np.random.default_rng(1)
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), rng.integers(1, 8)):
            data[pos] = int(rng.integers(0, 256))
        cut = int(rng.integers(len(data) // 2, len(data) + 1))
        try:
            out = load_image(bytes(data[:cut]))
        except BadImageError as e:
            assert "\n" not in str(e)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


# --- good files -------------------------------------------------------------------------------


def test_exif_orientation_6_comes_back_upright(tmp_path: Path) -> None:
    stored = np.zeros((20, 30, 3), np.uint8)  # 30 wide, 20 tall as stored
    stored[:10, :15] = (255, 0, 0)  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = write(tmp_path, "rot.jpg", encode(Image.fromarray(stored), "JPEG", exif=exif))
    out = load_image(path)
    check_rgb(out, (30, 20))  # width and height swapped
    assert out[2, -2, 0] > 200 and out[2, -2, 1] < 60  # stored top-left is now top-right
    assert out[-2, 2].max() < 60


def test_exif_orientation_on_pil_input_leaves_caller_image_alone() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    img = Image.open(io.BytesIO(encode(Image.new("RGB", (30, 20)), "JPEG", exif=exif)))
    check_rgb(load_image(img), (30, 20))
    assert img.size == (30, 20)
    assert img.getexif()[0x0112] == 6


def test_rgb_jpeg_from_str_path_bytes_and_bytearray(tmp_path: Path) -> None:
    data = encode(Image.new("RGB", (40, 30), (10, 200, 30)), "JPEG", quality=95)
    path = write(tmp_path, "x.jpg", data)
    for source in (path, str(path), data, bytearray(data)):
        out = load_image(source)
        check_rgb(out, (30, 40))
        assert np.abs(out.astype(int) - (10, 200, 30)).max() <= 3


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    pixels = noise(17, 23)
    assert np.array_equal(load_image(encode(Image.fromarray(pixels), fmt)), pixels)


def test_webp_lossless_round_trip() -> None:
    pixels = noise(17, 23)
    data = encode(Image.fromarray(pixels), "WEBP", lossless=True)
    assert np.array_equal(load_image(data), pixels)


def test_grey_png(tmp_path: Path) -> None:
    grey = np.array([[0, 100, 255]], np.uint8)
    out = load_image(write(tmp_path, "g.png", encode(Image.fromarray(grey, "L"), "PNG")))
    check_rgb(out, (1, 3))
    assert out[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def test_rgba_png_composites_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 128], [200, 10, 20, 255]]], np.uint8)
    out = load_image(write(tmp_path, "a.png", encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    check_rgb(out, (1, 3))
    assert out[0].tolist() == [[255, 255, 255], [127, 127, 127], [200, 10, 20]]


def test_grey_alpha_png_composites_over_white() -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (50, 255))
    assert load_image(encode(la, "PNG"))[0].tolist() == [[255, 255, 255], [50, 50, 50]]


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey16 = np.array([[0, 255, 32768, 65535]], np.uint16)
    data = encode(Image.fromarray(grey16), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # PIL's convert("L") would clip these
    out = load_image(write(tmp_path, "g16.png", data))
    assert out[:, :, 0].tolist() == [[0, 0, 128, 255]]
    assert (out == out[:, :, :1]).all()


def test_16bit_rgb_png_is_read_as_8bit_by_pil() -> None:
    rows = b"\x00" + struct.pack(">HHH", 65535, 32768, 255)
    data = raw_png(1, 1, 16, 2, rows)
    assert Image.open(io.BytesIO(data)).mode == "RGB"  # PIL keeps the high byte itself
    assert load_image(data)[0, 0].tolist() == [255, 128, 0]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in ink
    data = encode(cmyk, "JPEG", quality=100)
    assert "adobe" in Image.open(io.BytesIO(data)).info  # PIL writes inverted Adobe CMYK
    out = load_image(write(tmp_path, "c.jpg", data))
    check_rgb(out, (8, 8))
    assert np.abs(out[4, 4].astype(int) - (255, 0, 0)).max() <= 5


def test_palette_png_with_and_without_transparency() -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    assert load_image(encode(pal, "PNG"))[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    clear = load_image(encode(pal, "PNG", transparency=1))
    assert clear[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_multi_frame_tiff_uses_first_frame() -> None:
    first, second = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 255, 0))
    data = encode(first, "TIFF", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = load_image(data)
    check_rgb(out, (4, 4))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_mpo_uses_first_frame() -> None:
    first, second = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=100)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert np.abs(load_image(data)[4, 4].astype(int) - (255, 0, 0)).max() <= 5


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.new("1", (2, 1), 1), [255, 255]),
        (Image.new("L", (2, 1), 77), [77, 77]),
        (Image.fromarray(np.array([[-5.0, 100.6]], np.float32), "F"), [0, 101]),
        (Image.fromarray(np.array([[-5, 70000]], np.int32), "I"), [0, 255]),
        (Image.new("I;16B", (2, 1), 32768), [128, 128]),
    ],
)
def test_pil_modes(img: Image.Image, expected: list[int]) -> None:
    out = load_image(img)
    check_rgb(out, (1, 2))
    assert out[0, :, 0].tolist() == expected
    assert (out == out[:, :, :1]).all()


def test_pil_input_pixel_limit() -> None:
    refused(Image.new("RGB", (100, 100)), r"over the 0\.001 MP limit$", max_pixels=1000)


# --- numpy input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([[0, 128, 255]], np.uint8), [0, 128, 255]),
        (np.array([[[0], [128], [255]]], np.uint8), [0, 128, 255]),
        (np.array([[0, 32768, 65535]], np.uint16), [0, 128, 255]),
        (np.array([[0, 32768, 65535]], ">u2"), [0, 128, 255]),
        (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),
        (np.array([[0.0, 0.5, 1.0]], np.float64), [0, 128, 255]),
        (np.array([[0.0, 0.5, 1.0]], np.float16), [0, 128, 255]),
    ],
)
def test_numpy_grey_inputs(arr: np.ndarray, expected: list[int]) -> None:
    out = load_image(arr)
    check_rgb(out, (1, 3))
    assert out[0, :, 0].tolist() == expected
    assert (out == out[:, :, :1]).all()


def test_numpy_rgb_is_copied_not_shared() -> None:
    arr = noise(5, 7)
    out = load_image(arr)
    assert np.array_equal(out, arr) and not np.shares_memory(out, arr)
    strided = load_image(noise(10, 14)[::2, ::2])
    check_rgb(strided, (5, 7))


def test_numpy_rgba_composites_over_white() -> None:
    rgba = np.array([[[0, 0, 0, 0], [10, 20, 30, 255]]], np.uint8)
    assert load_image(rgba)[0].tolist() == [[255, 255, 255], [10, 20, 30]]
    rgba16 = rgba.astype(np.uint16) * 257
    assert load_image(rgba16)[0].tolist() == [[255, 255, 255], [10, 20, 30]]


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((4, 4), np.int32), r"^unsupported array dtype int32"),
        (np.zeros((4, 4), bool), r"^unsupported array dtype bool"),
        (np.full((4, 4), 200.0), r"^float image values must lie in \[0, 1\], found 200\.\.200$"),
        (np.array([[0.5, np.nan]]), r"^float image values must lie in \[0, 1\]"),
        (np.zeros((4, 4, 2), np.uint8), r"^array shape \(4, 4, 2\) is not"),
        (np.zeros((1, 4, 4, 3), np.uint8), r"^array shape \(1, 4, 4, 3\) is not"),
        (np.zeros(12, np.uint8), r"^array shape \(12,\) is not"),
        (np.zeros((0, 5, 3), np.uint8), r"^empty image array"),
    ],
)
def test_numpy_bad_inputs(arr: np.ndarray, match: str) -> None:
    refused(arr, match)


def test_numpy_pixel_limit() -> None:
    refused(np.zeros((100, 200, 3), np.uint8), r"^image is 200x100 = ", max_pixels=19_999)
