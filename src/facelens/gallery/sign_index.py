"""`SignScanIndex`: every face's 256 sign bits scanned with AVX-512 or AVX2, the nearest by
Hamming distance re-ranked on float16 vectors.

Why signs: on the bench's face-like vectors (`facelens bench search`), the signs of a face's
centred vector on the principal axes keep the mate exact search names among a thread's 256
nearest of 500k faces by Hamming distance (docs/decisions.md). Only axes that carry spread
are used (fused 256-d vectors span ~210 dimensions; on the rest a sign is float16 rounding),
and where fewer than 256 do (those, or 128-d SFace vectors), the other bits are directions
of fixed random rotations within their span. A face is 32 bytes of codes, and the scan
counts the bits of 512 faces (AVX-512) or 256 (AVX2) at once with bitwise adders
(sign_scan.c), over only the half of the directions where the query's bits are the rarer
kind; the per-face count of 1-bits is stored, which gives the other half.

Everything else (ids, float16 rows, fitting, compaction, files) is `ScanIndex`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from facelens.gallery.index import Vectors
from facelens.gallery.scan_index import ScanIndex, _aligned, _kernels, _ptr

BITS = 256  # sign bits a face
_FACES = 512  # faces a block (sign_scan.h)
_WORDS = 266  # 64-byte words a block: 256 directions, 9 count planes, one of zeros
_FLAT = 1e-3  # an axis with less spread than this share of the strongest one's is not coded
_SET = 128  # sign_scan.h's sign_query: byte offsets of the rarer bit's words, padded
_QUERY = np.dtype([("at", np.uint16, _SET), ("groups", np.int32), ("ones", np.int32),
                   ("n1", np.int32)])


def _planes(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """(faces <= 512, n) bits -> (n, 64) bytes: bit j of word i is face j's bit i."""
    padded = np.zeros((_FACES, bits.shape[1]), bool)
    padded[:len(bits)] = bits
    return np.packbits(padded.T, axis=1, bitorder="little")


class SignScanIndex(ScanIndex):
    """Exhaustive scan of 256-bit sign codes on AVX-512 or AVX2 (`unit`: "avx512" or
    "avx2", the best one here by default), nearest by Hamming distance, with a float16
    re-rank (module docstring: why). `candidates`: faces a thread keeps per query."""

    _magic = b"FLSIGN1\n"
    UNITS = ("avx512", "avx2")
    NEEDS = "AVX-512 or AVX2"
    _FILL = 0
    CANDIDATES = 256
    SWEEP = ({"candidates": 64}, {"candidates": 128}, {"candidates": 512})

    @property
    def params(self) -> dict[str, Any]:
        return {"backend": f"{BITS}-bit sign scan ({self._unit.upper()}) of {self._dim}-d "
                           "vectors + float16 re-rank",
                "candidates": self.candidates, "threads": self._threads}

    def _code_axes(self, axes: Vectors, centred: Vectors | None) -> None:
        """The strongest 256 principal axes that carry the faces' spread; where fewer do, all
        of those and then directions of fixed random rotations of their span."""
        if centred is None:
            strong = axes
        else:
            spread = (centred @ axes).std(axis=0)
            # why: on an axis with next to no spread a sign is the float16 rounding of the
            # stored row, i.e. noise (fused vectors span ~210 of 256 dimensions)
            spread_out = spread > _FLAT * spread[0]
            strong = axes[:, spread_out] if spread_out.any() else axes  # all faces alike
        span, rng = strong.shape[1], np.random.default_rng(0)
        rotations = [strong @ np.linalg.qr(rng.standard_normal((span, span)))[0]
                     for _ in range(-(-max(0, BITS - span) // span))]
        self._axes = np.ascontiguousarray(np.hstack([strong, *rotations])[:, :BITS],
                                          np.float32)
        self._scale = np.ones(BITS, np.float32)  # unused: kept so the file layout is shared
        self._code_dims = BITS

    def _blank(self, capacity: int) -> npt.NDArray[np.uint8]:
        blocks = -(-capacity // _FACES)
        return _aligned((blocks, _WORDS, _FACES // 8), 0)

    def _encode(self, rows: npt.NDArray[np.int64]) -> None:
        """(Re)write the codes of every block holding one of these rows, from its float16
        vectors (rows removed or past the end stay blank)."""
        for block in np.unique(rows // _FACES):
            faces = np.arange(block * _FACES, min((block + 1) * _FACES, self._n))
            vectors = self._vectors[faces].astype(np.float32)
            bits = ((vectors - self._mean) @ self._axes > 0) & (self._labels[faces] >= 0)[:, None]
            count = bits.sum(axis=1)
            planes = (count[:, None] >> np.arange(9)) & 1
            self._blocks[block, :BITS] = _planes(bits)
            self._blocks[block, BITS:BITS + 9] = _planes(planes.astype(bool))
            self._blocks[block, BITS + 9] = 0

    def _erase(self, rows: npt.NDArray[np.int64]) -> None:
        """Clear these faces' bits and counts (a blank face: no 1-bits)."""
        for row in rows.tolist():
            block, face = divmod(row, _FACES)
            self._blocks[block, :BITS + 9, face // 8] &= np.uint8(~(1 << face % 8) & 0xFF)

    def _candidates(self, q: Vectors, keep: int, scores: npt.NDArray[np.int32],
                    rows: npt.NDArray[np.int64]) -> None:
        avx512, avx2, _ = _kernels()
        queries = sign_queries(self, q)
        library = avx512 if self._unit == "avx512" else avx2
        assert library is not None  # checked when the index was made
        getattr(library, f"fl_sign_search_{self._unit}")(
            _ptr(self._blocks), self._n, _ptr(self._labels), _ptr(queries), len(q), keep,
            self._threads, _ptr(scores), _ptr(rows))


def sign_queries(index: SignScanIndex, q: Vectors) -> npt.NDArray[np.void]:
    """The queries as the kernel takes them (`_QUERY`: where in a block the words of each
    one's rarer kind of bit lie, which kind, and its count of 1-bits), made in C: a numpy
    product here would wake BLAS threads that spin on the scan's cores."""
    avx2 = _kernels()[1]
    assert avx2 is not None  # checked when the index was made
    queries = np.empty(len(q), _QUERY)
    avx2.fl_sign_queries(_ptr(q), len(q), index.dim, _ptr(index._mean), _ptr(index._axes),
                         _ptr(queries))
    return queries
