"""The sign scan's codes: which 256 directions a face's sign bits are taken on, the blocks the
kernel scans (layout: sign_scan.h), the query record it takes, and the share of faces its
filter passes at each count of unlike bits."""

from __future__ import annotations

from math import comb

import numpy as np
import numpy.typing as npt

from facelens.index.base import Vectors
from facelens.index.kernels import aligned

BITS = 256  # sign bits a face
STRONG = 64  # directions the filter counts (sign_scan.h)
FACES = 512  # faces a block (sign_scan.h)
_PLANES = 2 * BITS * FACES // 8  # bytes of a block's bits, as they are and inverted
_LIVE = slice(_PLANES, _PLANES + FACES // 8)  # a block's word of the faces there
_CODES = _LIVE.stop  # where a block's codes start
_CODE = BITS // 8  # bytes of a face's code
_FLAT = 1e-3  # an axis with less spread than this share of the strongest one's is not coded
PASSING_SAMPLE = (256, 8_192)  # fitted faces taken as queries / as the faces they filter
QUERY = np.dtype([("bits", np.uint64, BITS // 64), ("strong", np.uint64, BITS // 64),
                  ("at", np.uint16, STRONG),
                  ("pass", np.int32), ("unused", np.int32)])
"""sign_scan.h's sign_query."""


def code_axes(axes: Vectors, centred: Vectors | None) -> Vectors:
    """The 256 directions (dim x 256) a face's bits are its signs on, from the principal axes
    (dim x dim, strongest first) and the centred sample they came from (None: identity axes,
    no sample): the strongest axes that carry the faces' spread; where fewer than 256 do, all
    of those and then directions of fixed random rotations of their span."""
    if centred is None:
        strong = axes
    else:
        spread = (centred @ axes).std(axis=0)
        # why: on an axis with next to no spread a sign is the float16 rounding of the stored
        # row, i.e. noise (fused vectors span ~210 of 256 dimensions)
        spread_out = spread > _FLAT * spread[0]
        strong = axes[:, spread_out] if spread_out.any() else axes  # all faces alike
    span, rng = strong.shape[1], np.random.default_rng(0)
    rotations = [strong @ np.linalg.qr(rng.standard_normal((span, span)))[0]
                 for _ in range(-(-max(0, BITS - span) // span))]
    return np.ascontiguousarray(np.hstack([strong, *rotations])[:, :BITS], np.float32)


def binomial_passing() -> npt.NDArray[np.float64]:
    """The share of faces with at most t of STRONG bits unlike a query's, t = 0..STRONG, for
    independent fair bits (no gallery to measure it on yet)."""
    return np.cumsum([comb(STRONG, t) for t in range(STRONG + 1)]) / 2.0**STRONG


def passing(queries: npt.NDArray[np.void], faces: npt.NDArray[np.bool_]
            ) -> npt.NDArray[np.float64]:
    """The share of `faces` (their bits) unlike a query on at most t of its STRONG strongest
    directions, t = 0..STRONG, over `queries` (`QUERY` records)."""
    words = np.packbits(faces, axis=1, bitorder="little").view(np.uint64)
    unlike = np.bitwise_count((words[:, None] ^ queries["bits"]) & queries["strong"])
    counts = np.bincount(unlike.sum(axis=2).ravel(), minlength=STRONG + 1)[:STRONG + 1]
    return np.cumsum(counts) / counts.sum()


def blank(capacity: int) -> npt.NDArray[np.uint8]:
    """Blocks for `capacity` faces, nobody there (sign_scan.h: every bit set on every
    direction, inverted too)."""
    blocks = aligned((-(-capacity // FACES), _CODES + FACES * _CODE), 0)
    blocks[:, :_PLANES] = 0xFF
    return blocks


def _planes(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """(faces <= 512, n) bits -> (n, 64) bytes: bit j of word i is face j's bit i; faces past
    the given ones have every bit set (sign_scan.h: not there)."""
    padded = np.ones((FACES, bits.shape[1]), bool)
    padded[:len(bits)] = bits
    return np.packbits(padded.T, axis=1, bitorder="little")


def write_block(block: npt.NDArray[np.uint8], bits: npt.NDArray[np.bool_]) -> None:
    """Fill one block with the bits of its first len(bits) faces (the rest not there)."""
    codes = block[_CODES:].reshape(FACES, _CODE)
    codes[:] = 0
    codes[:len(bits)] = np.packbits(bits, axis=1, bitorder="little")
    block[:_PLANES] = np.vstack([_planes(bits), _planes(~bits)]).ravel()
    block[_LIVE] = np.packbits(np.arange(FACES) < len(bits), bitorder="little")


def erase(blocks: npt.NDArray[np.uint8], rows: npt.NDArray[np.int64]) -> None:
    """Mark these faces not there: both bits set on every direction (unlike every query), out
    of their block's word of faces there, codes cleared."""
    for row in rows.tolist():
        block, face = divmod(row, FACES)
        planes = blocks[block, :_PLANES].reshape(2 * BITS, FACES // 8)
        planes[:, face // 8] |= np.uint8(1 << face % 8)
        blocks[block, _LIVE.start + face // 8] &= np.uint8(~(1 << face % 8) & 0xFF)
        blocks[block, _CODES + face * _CODE:_CODES + (face + 1) * _CODE] = 0
