"""`SignScanIndex`: every face's 256 sign bits, a filter on each query's strongest
directions scanned with AVX-512 or AVX2, the nearest of the faces it passes by a weighted
Hamming distance re-ranked on float16 vectors.

Why signs: on the bench's face-like vectors (`facelens bench search`), the signs of a face's
centred vector on the principal axes keep the mate exact search names among a thread's 256
nearest of 500k faces by Hamming distance (docs/decisions.md). Only axes that carry spread
are used (fused 256-d vectors span ~210 dimensions; on the rest a sign is float16 rounding),
and where fewer than 256 do (those, or 128-d SFace vectors), the other bits are directions
of fixed random rotations within their span.

Why a filter: a second photo's sign rarely flips where the query's projection is large, so
counting a face's bits unlike the query's on only its 64 strongest directions lets ~0.5% of
strangers and nearly every mate through, at half the adders of the rarer half of the bits
that an earlier scan counted (sign_scan.c counts 512 or 256 faces at once across registers).
The faces that pass get a full count from their 32-byte codes, a bit unlike the query's
counting 3 on its strongest directions and 1 elsewhere: nearer the float ranking than plain
Hamming, so each thread keeps 128 candidates where it kept 256. How many may pass is a
share of the faces: the `pass_share` of a large gallery, more in a small one (at least 16 x
`candidates` a thread), turned into a count of unlike bits by `_passing`, the share of faces
each count lets through, measured when the axes are fitted.

Everything else (ids, float16 rows, fitting, compaction, files) is `ScanIndex`'s.
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np
import numpy.typing as npt

from facelens.index.indexes import Vectors
from facelens.index.scan import ScanIndex, _aligned, _kernels, _ptr

BITS = 256  # sign bits a face
STRONG = 64  # directions the filter counts (sign_scan.h)
_FACES = 512  # faces a block (sign_scan.h)
_PLANES = 2 * BITS * _FACES // 8  # bytes of a block's bits, as they are and inverted
_LIVE = slice(_PLANES, _PLANES + _FACES // 8)  # a block's word of the faces there
_CODES = _LIVE.stop  # where a block's codes start
_CODE = BITS // 8  # bytes of a face's code
_FLAT = 1e-3  # an axis with less spread than this share of the strongest one's is not coded
_PASSING_SAMPLE = (256, 8_192)  # fitted faces taken as queries / as the faces they filter
_QUERY = np.dtype([("bits", np.uint64, BITS // 64), ("strong", np.uint64, BITS // 64),
                   ("at", np.uint16, STRONG),
                   ("pass", np.int32), ("unused", np.int32)])


def _planes(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """(faces <= 512, n) bits -> (n, 64) bytes: bit j of word i is face j's bit i; faces past
    the given ones have every bit set (sign_scan.h: not there)."""
    padded = np.ones((_FACES, bits.shape[1]), bool)
    padded[:len(bits)] = bits
    return np.packbits(padded.T, axis=1, bitorder="little")


def _binomial_passing() -> npt.NDArray[np.float64]:
    """The share of faces with at most t of STRONG bits unlike a query's, t = 0..STRONG, for
    independent fair bits (no gallery to measure it on yet)."""
    return np.cumsum([comb(STRONG, t) for t in range(STRONG + 1)]) / 2.0**STRONG


class SignScanIndex(ScanIndex):
    """A filter on each query's strongest sign bits, then a full count of unlike bits
    weighted toward those, on AVX-512 or AVX2 (`unit`: "avx512" or "avx2", the best one here
    by default), with a float16 re-rank (module docstring: why). `candidates`: faces a thread
    keeps per query; `pass_share`: the share of a large gallery's faces its filter passes."""

    _magic = b"FLSIGN2\n"
    _FITTED = ("_mean", "_axes", "_passing")
    UNITS = ("avx512", "avx2")
    NEEDS = "AVX-512 or AVX2"
    _FILL = 0
    CANDIDATES = 128
    # Between the shares that 20 and 21 unlike bits pass on fused and SFace faces (~0.48%,
    # ~0.9%), so that a gallery's own measurement lands on 20 (docs/decisions.md)
    PASS_SHARE = 0.006
    SWEEP = ({"candidates": 64, "pass_share": PASS_SHARE},
             {"candidates": 256, "pass_share": PASS_SHARE},
             {"candidates": CANDIDATES, "pass_share": 0.003},
             {"candidates": CANDIDATES, "pass_share": 0.012})

    def __init__(self, dim: int, *, candidates: int | None = None, unit: str | None = None,
                 pass_share: float = PASS_SHARE) -> None:
        self.pass_share = pass_share
        super().__init__(dim, candidates=candidates, unit=unit)

    @property
    def params(self) -> dict[str, Any]:
        return {"backend": f"{BITS}-bit sign scan ({self._unit.upper()}) of {self._dim}-d "
                           f"vectors, filtered on each query's {STRONG} strongest, + float16 "
                           "re-rank",
                "candidates": self.candidates, "pass_share": self.pass_share,
                "threads": self._threads}

    def _code_axes(self, axes: Vectors, centred: Vectors | None) -> None:
        """The strongest 256 principal axes that carry the faces' spread; where fewer do, all
        of those and then directions of fixed random rotations of their span. Then the share
        of faces the filter passes at each count, measured on the sample."""
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
        self._code_dims = BITS
        self._passing = _binomial_passing() if centred is None else self._measure_passing(
            centred)

    def _measure_passing(self, centred: Vectors) -> npt.NDArray[np.float64]:
        """The share of faces unlike a query on at most t of its STRONG strongest directions,
        t = 0..STRONG: the first fitted faces taken as queries of the next ones."""
        asked, filtered = _PASSING_SAMPLE
        asked = min(asked, len(centred) // 4)
        # the queries as the kernel makes them, so that these are its filter's shares
        queries = sign_queries(self, centred[:asked] + self._mean)
        faces = np.packbits(centred[asked:asked + filtered] @ self._axes > 0, axis=1,
                            bitorder="little").view(np.uint64)
        unlike = np.bitwise_count((faces[:, None] ^ queries["bits"]) & queries["strong"])
        counts = np.bincount(unlike.sum(axis=2).ravel(), minlength=STRONG + 1)[:STRONG + 1]
        return np.cumsum(counts) / counts.sum()

    def _pass(self, keep: int) -> int:
        """The most of a query's STRONG strongest bits a face may be unlike and be counted
        in full: a count that passes `pass_share` of the faces, or at least 16 x `keep` of
        a thread's (all of them in a small gallery)."""
        share = max(self.pass_share, 16 * keep * self._threads / max(self._n, 1))
        if share >= 1:
            return STRONG
        return max(0, int(np.searchsorted(self._passing, share, side="right")) - 1)

    def _blank(self, capacity: int) -> npt.NDArray[np.uint8]:
        blocks = _aligned((-(-capacity // _FACES), _CODES + _FACES * _CODE), 0)
        blocks[:, :_PLANES] = 0xFF  # sign_scan.h: nobody there
        return blocks

    def _encode(self, rows: npt.NDArray[np.int64]) -> None:
        """(Re)write the codes of every block holding one of these rows, from its float16
        vectors (rows removed or past the end stay blank)."""
        for block in np.unique(rows // _FACES):
            faces = np.arange(block * _FACES, min((block + 1) * _FACES, self._n))
            vectors = self._vectors[faces].astype(np.float32)
            bits = (vectors - self._mean) @ self._axes > 0
            codes = self._blocks[block, _CODES:].reshape(_FACES, _CODE)
            codes[:] = 0
            codes[:len(faces)] = np.packbits(bits, axis=1, bitorder="little")
            self._blocks[block, :_PLANES] = np.vstack([_planes(bits), _planes(~bits)]).ravel()
            there = np.arange(_FACES) < len(faces)
            self._blocks[block, _LIVE] = np.packbits(there, bitorder="little")
            self._erase(faces[self._labels[faces] < 0])

    def _erase(self, rows: npt.NDArray[np.int64]) -> None:
        """Mark these faces not there: both bits set on every direction (unlike every
        query), out of the block's word of faces there, codes cleared."""
        for row in rows.tolist():
            block, face = divmod(row, _FACES)
            planes = self._blocks[block, :_PLANES].reshape(2 * BITS, _FACES // 8)
            planes[:, face // 8] |= np.uint8(1 << face % 8)
            self._blocks[block, _LIVE.start + face // 8] &= np.uint8(~(1 << face % 8) & 0xFF)
            self._blocks[block, _CODES + face * _CODE:_CODES + (face + 1) * _CODE] = 0

    def _candidates(self, q: Vectors, keep: int, scores: npt.NDArray[np.int32],
                    rows: npt.NDArray[np.int64]) -> None:
        avx512, avx2, _ = _kernels()
        queries = sign_queries(self, q)
        queries["pass"] = self._pass(keep)
        library = avx512 if self._unit == "avx512" else avx2
        assert library is not None  # checked when the index was made
        getattr(library, f"fl_sign_search_{self._unit}")(
            _ptr(self._blocks), self._n, _ptr(queries), len(q), keep, self._threads,
            _ptr(scores), _ptr(rows))


def sign_queries(index: SignScanIndex, q: Vectors) -> npt.NDArray[np.void]:
    """The queries as the kernel takes them (`_QUERY`: their bits, where in a block the words
    of the faces unlike each on its strongest directions lie; `pass` left at STRONG), made
    in C: a numpy product here would wake BLAS threads that spin on the scan's cores."""
    avx2 = _kernels()[1]
    assert avx2 is not None  # checked when the index was made
    queries = np.empty(len(q), _QUERY)
    avx2.fl_sign_queries(_ptr(q), len(q), index.dim, _ptr(index._mean), _ptr(index._axes),
                         _ptr(queries))
    return queries
