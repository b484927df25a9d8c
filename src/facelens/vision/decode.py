"""Turn any image input (path, bytes, array, PIL image) into a uint8 RGB array, or fail cleanly.

Every bad input raises BadImageError with a one-line message; limits are checked before any
pixel is decoded, so a hostile file costs a header parse, not gigabytes of memory.
"""

import io
import os
import re
import stat
import struct
import typing

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from facelens.errors import BadImageError, ImageTooLargeError, UnsupportedImageError

ImageSource = str | os.PathLike | bytes | np.ndarray | Image.Image | typing.BinaryIO
"""A path, encoded bytes, an open binary file (read from where it stands), pixels, a PIL image."""

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 16_384
"""Longest side accepted: OpenCV's warps stop at 32,767 px and no camera makes wider frames."""
MAX_ASPECT = 100
"""Longest side over shortest accepted (panoramas stay under ~12:1): a thinner strip holds no
face, and the detector, shrinking the longest side to its `detect_max_side`, would shrink the
other to 0 px (a 16000x1 PNG answered 500)."""
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"})

# What PIL raises on malformed data (its plugins are not consistent about it).
# AssertionError: some plugins assert on their input (a palette PNG without PLTE).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError,
               TypeError, ZeroDivisionError, AssertionError,
               Image.DecompressionBombError)  # fmt: skip


def load_image(
    source: ImageSource,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
    formats: frozenset[str] = ALLOWED_FORMATS,
    max_side: int | None = None,
) -> np.ndarray:
    """Return a C-contiguous uint8 (H, W, 3) RGB copy of `source`; raise BadImageError if bad.
    With `max_side`, an encoded image is shrunk while it is decoded (JPEG at reduced DCT scale,
    others in their own mode before the RGB conversion) so that no side exceeds it."""
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        return _from_pil(source)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_bytes(len(data), max_bytes)
    elif isinstance(source, io.IOBase) or callable(getattr(source, "read", None)):
        data = source.read(max_bytes + 1)  # type: ignore[union-attr]  # bounded: a pipe may not end
        if not isinstance(data, bytes):
            raise BadImageError("an open file must be opened in binary mode ('rb')")
        _check_bytes(len(data), max_bytes)
    elif isinstance(source, str | os.PathLike):
        try:
            return _decode(_read_file(source, max_bytes), max_pixels, formats, max_side)
        except BadImageError as e:  # one bad photo among thousands must be findable
            if (shown := _shown(source)) in str(e):
                raise
            raise type(e)(f"{shown}: {e}") from None
    else:
        raise BadImageError(f"cannot read an image from a {type(source).__name__}")
    return _decode(data, max_pixels, formats, max_side)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """An RGB image as JPEG bytes. OpenCV writes the same bytes as Pillow here, in 11 ms
    instead of 18 on a 1080p frame (the camera preview encodes every one)."""
    bgr = cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return jpeg.tobytes()


def image_size(data: bytes, formats: frozenset[str] = ALLOWED_FORMATS) -> tuple[int, int] | None:
    """(width, height) from the header of encoded `data`, or None when no allowed format
    reads it (load_image then says why). Decodes no pixel."""
    Image.init()
    try:
        with Image.open(io.BytesIO(data), formats=sorted(f for f in formats if f in Image.OPEN)
                        ) as img:
            return img.size
    except (Image.UnidentifiedImageError, *_PIL_ERRORS):
        return None


def _shown(path: str | os.PathLike) -> str:
    name = os.fsdecode(path)
    return name if name.isprintable() else repr(name)  # keep the message on one line


def _read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    shown = _shown(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise BadImageError(f"is a directory, not an image: {shown}")
        # Only regular files: a FIFO or /dev/zero has no meaningful size to check up front.
        if not stat.S_ISREG(st.st_mode):
            raise BadImageError(f"not a regular file: {shown}")
        _check_bytes(st.st_size, max_bytes)
        with open(path, "rb") as f:
            # Sized from the stat, not max_bytes: read(n) allocates n bytes up front, 50 MB
            # for every small photo. +1: notice a file that grew after the stat.
            data = f.read(min(st.st_size, max_bytes) + 1)
        if len(data) > st.st_size:
            raise BadImageError(f"file changed while being read: {shown}")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise BadImageError(f"no such file: {shown}") from e
    except (OSError, ValueError) as e:  # permissions, NUL in the path, I/O errors
        raise BadImageError(f"cannot read {shown}: {_why(e)}") from e
    _check_bytes(len(data), max_bytes)
    return data


def _decode(data: bytes, max_pixels: int, formats: frozenset[str],
            max_side: int | None) -> np.ndarray:
    Image.init()
    # Only the allowed plugins get to parse the bytes: less attack surface than trying all 40.
    known = sorted(f for f in formats if f in Image.OPEN)
    try:
        img = Image.open(io.BytesIO(data), formats=known)  # lazy: reads the header only
    except Image.UnidentifiedImageError as e:
        sniffed = _sniff(data)
        if sniffed is None:
            raise BadImageError("not an image (or an unsupported format)") from e
        if sniffed not in formats:
            raise _unsupported(sniffed, formats) from e
        raise BadImageError(f"truncated or corrupt {sniffed} header") from e
    except Image.DecompressionBombError as e:
        # PIL's own guard (over 2 * Image.MAX_IMAGE_PIXELS) fired in open(), before our check.
        found = re.search(r"\((\d+) pixels\)", str(e))
        shown = f"{int(found[1]) / 1e6:.1f} MP" if found else "too large"
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageTooLargeError(f"image is {shown}, over the {limit / 1e6:g} MP limit") from e
    except _PIL_ERRORS as e:
        raise BadImageError(f"truncated or corrupt image: {_why(e)}") from e
    with img:
        # jpeg_factory may hand back MPO for JPEG (or JPEG for MPO), so check what we got.
        if img.format not in formats:
            raise _unsupported(str(img.format), formats)
        _check_pixels(img.size, max_pixels)
        return _from_pil(img, max_side)


def _from_pil(img: Image.Image, max_side: int | None = None) -> np.ndarray:
    try:
        if max_side and max(img.size) > max_side and img.format == "JPEG":
            img.draft(img.mode, (max_side, max_side))  # decodes at 1/2, 1/4 or 1/8 scale
        img.load()  # truncated files raise here, as long as LOAD_TRUNCATED_IMAGES stays False
    except _PIL_ERRORS as e:
        if _closed(img):
            raise BadImageError("the PIL image was closed before its pixels were read: load() "
                                "it before closing it or its file (or leaving its `with "
                                "Image.open(...)` block), or pass the path") from e
        raise BadImageError(f"truncated or corrupt image: {_why(e)}") from e
    try:
        # exif_transpose returns a new image (the caller's is never modified); skipped when
        # there is nothing to turn, as it copies every pixel even then.
        turned = img.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1)
        upright = ImageOps.exif_transpose(img) if turned else img
        if max_side and max(upright.size) > max_side:
            upright = _shrunk(upright, max_side)
    except _PIL_ERRORS as e:
        raise BadImageError(f"truncated or corrupt image: {_why(e)}") from e
    try:
        return _pil_to_rgb(upright)
    except _PIL_ERRORS as e:
        raise BadImageError(f"cannot convert {img.mode} image to RGB: {_why(e)}") from e


def _closed(img: Image.Image) -> bool:
    """Whether the image's pixels can no longer be read: close() was called (PIL then fails
    with "Operation on closed image"), or its file was closed before load() (AssertionError,
    "seek of closed file"). Only asked once load() failed: a loaded image needs no file."""
    fp = getattr(img, "fp", None)  # Image.new's images have none; close() sets it to None
    return fp is None or bool(getattr(fp, "closed", False))


def _shrunk(img: Image.Image, max_side: int) -> Image.Image:
    # In the image's own mode, before the RGB conversion: 1 byte a pixel for 1, L and P.
    factor = -(-max(img.size) // max_side)
    size = (max(1, img.width // factor), max(1, img.height // factor))
    nearest = img.mode in ("1", "P")  # palette indices cannot be averaged
    return img.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BOX)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode == "F":
        return _to_rgb(np.rint(np.clip(np.asarray(img), 0, 255)).astype(np.uint8))
    if img.mode == "I" or img.mode.startswith("I;16"):
        # PIL's convert("L") clips 16-bit grey at 255 (32768 -> 255), so scale it ourselves.
        grey16 = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        return _to_rgb(_from_16bit(grey16, f"mode {img.mode} image", "convert it to L"))
    if img.has_transparency_data:  # RGBA, LA, PA, or a P/L/RGB image with a tRNS colour
        return _over_white(np.asarray(img.convert("RGBA")))
    if img.mode == "RGB":
        return np.array(img, dtype=np.uint8)  # a copy: writable, never the caller's pixels
    return np.array(img.convert("RGB"), dtype=np.uint8)  # L, 1, P, CMYK, YCbCr, LAB, HSV, ...


def _from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        raise BadImageError(f"array shape {arr.shape} is not (H, W) or (H, W, 1|3|4)")
    if arr.size == 0:
        raise BadImageError(f"empty image array of shape {arr.shape}")
    _check_pixels((arr.shape[1], arr.shape[0]), max_pixels)
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "u" and size == 1:
        pixels = arr
    elif kind == "u" and size == 2:
        pixels = _from_16bit(arr, "uint16 image", "pass them as uint8")
    elif kind == "f":
        lo, hi = float(arr.min()), float(arr.max())
        # 0..255 floats (a common slip) would all turn white; NaN fails this test too.
        if not (lo >= 0.0 and hi <= 1.0):
            raise BadImageError(f"float image values must lie in [0, 1], found {lo:g}..{hi:g}")
        pixels = np.empty(arr.shape, np.uint8)
        for top in range(0, arr.shape[0], 256):  # by slabs: arr * 255 whole cost 2 GB at 40 MP
            pixels[top:top + 256] = np.rint(arr[top:top + 256] * 255)
    else:
        raise BadImageError(f"unsupported array dtype {arr.dtype} (accepted: uint8, uint16, float)")
    return _to_rgb(pixels)


def _from_16bit(values: np.ndarray, what: str, advice: str) -> np.ndarray:
    """16-bit pixels as 8-bit ones. Values that never pass 255 are 8-bit pixels cast up
    (`astype(np.uint16)`, PIL's convert("I")), which the shift would turn black: refused, as
    0..255 floats are. All zero is a black frame either way."""
    top = int(values.max())
    if 0 < top <= 255:
        raise BadImageError(f"{what} values only reach {top} of 65535: 8-bit pixels? {advice}")
    return (values >> 8).astype(np.uint8)


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA -> fresh (H, W, 3) array."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        return _over_white(pixels)
    return np.array(pixels, dtype=np.uint8, order="C")  # copy: never share the caller's memory


def _over_white(rgba: np.ndarray) -> np.ndarray:
    # Over white, not black: transparent backgrounds (logos, scans, cut-outs) are usually light.
    rgb, alpha = rgba[:, :, :3].astype(np.uint16), rgba[:, :, 3:].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
"""Major brands of HEIF files (iPhone photos), which no installed plugin reads."""


def _sniff(data: bytes) -> str | None:
    """Name a format from its magic number alone (no plugin parses the data): for messages only."""
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "HEIF"
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept and accept(data[:16]):
                return fmt
        except _PIL_ERRORS:  # some accept() functions unpack a fixed-size header
            continue
    return None


def _check_bytes(n: int, max_bytes: int) -> None:
    # Bytes are usually an uploaded file, so both inputs speak of a "file".
    if n == 0:
        raise BadImageError("empty file")
    if n > max_bytes:
        raise ImageTooLargeError(f"file is {_size(n)}, over the {_size(max_bytes)} limit")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    # Our own check, independent of Image.MAX_IMAGE_PIXELS, which any library may set to None.
    w, h = size
    if w <= 0 or h <= 0:
        raise BadImageError(f"image is {w}x{h}: no pixels")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h / 1e6:.1f} MP, over the {max_pixels / 1e6:g} MP limit"
        )
    if max(w, h) > MAX_SIDE:
        raise ImageTooLargeError(f"image is {w}x{h}, over the {MAX_SIDE:,} px side limit")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise BadImageError(f"image is {w}x{h}: its sides are over {MAX_ASPECT}:1 apart")


def _unsupported(fmt: str, formats: frozenset[str]) -> BadImageError:
    accepted = ", ".join(sorted(formats))
    return UnsupportedImageError(f"unsupported format {fmt} (accepted: {accepted})")


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 2**20 else f"{n / 2**20:.1f}".removesuffix(".0") + " MB"


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__  # one line, never empty
