"""`AutoIndex`: exact search while a gallery is small, the large-gallery index this CPU runs best
(`large_index`) once it grows past `ANN_THRESHOLD` faces."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy.typing as npt

from facelens.index.base import Ids, Vectors
from facelens.index.exact import ExactIndex
from facelens.index.ivf import IVFIndex
from facelens.index.sign import SignScanIndex

ANN_THRESHOLD = 30_000
"""Faces above which `AutoIndex` leaves brute force for an approximate index: up to here an exact
scan answers in well under a millisecond, which the IVF lists do not beat (fused 256-d faces,
batches of 100: exact 0.08 against IVF 0.13 ms a query at 20k, 0.23 against 0.12 at 50k)."""

_KINDS: tuple[type[SignScanIndex] | type[IVFIndex], ...] = (SignScanIndex, IVFIndex)


def large_index_kind() -> type[SignScanIndex] | type[IVFIndex]:
    """The approximate index for galleries past the threshold: the sign scan where the CPU
    has AVX-512 (with VPOPCNTDQ) or AVX2, else the IVF partitions."""
    return SignScanIndex if SignScanIndex.runs_here() else IVFIndex


def large_index(dim: int) -> SignScanIndex | IVFIndex:
    """An empty index of `large_index_kind`."""
    return large_index_kind()(dim)


class AutoIndex:
    """Exact while the gallery holds at most `threshold` faces, `large_index` once it grows
    past it.

    The move builds the approximate index from the exact index's vectors and then drops them,
    so no second float32 copy is kept. A gallery that shrinks again stays approximate (no
    flip-flopping). Saved indexes load as the kind they were saved as, and say when that is
    `outdated`; a file of a layout this version does not read is refused with a ValueError
    (the gallery then rebuilds it from the database).
    """

    def __init__(self, dim: int, threshold: int = ANN_THRESHOLD,
                 inner: ExactIndex | SignScanIndex | IVFIndex | None = None) -> None:
        self.threshold = threshold
        self.inner = inner if inner is not None else ExactIndex(dim)

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def approximate(self) -> bool:
        return not isinstance(self.inner, ExactIndex)

    @property
    def outdated(self) -> bool:
        """Approximate but not of the kind this machine builds now (say an IVF cache saved
        before the scan could run here): a cache worth rebuilding from the database."""
        return self.approximate and type(self.inner) is not large_index_kind()

    def __len__(self) -> int:
        return len(self.inner)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        self.inner.add(ids, vectors)
        if isinstance(self.inner, ExactIndex) and len(self.inner) > self.threshold:
            exact, self.inner = self.inner, large_index(self.inner.dim)
            self.inner.add(exact.ids(), exact.vectors())

    def remove(self, ids: npt.ArrayLike) -> int:
        return self.inner.remove(ids)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        return self.inner.search(queries, k)

    def ids(self) -> Ids:
        return self.inner.ids()

    def save(self, path: Path) -> None:
        self.inner.save(path)

    @classmethod
    def load(cls, path: Path, threshold: int = ANN_THRESHOLD) -> Self:
        with path.open("rb") as f:
            head = f.read(8)
        kind = next((k for k in _KINDS if head == k._magic), None)
        if kind is not None:
            inner: ExactIndex | SignScanIndex | IVFIndex = kind.load(path)
        elif head.startswith(b"FL"):  # an older layout, or a kind this version does not build
            raise ValueError(f"{path} holds an index layout this version does not read")
        else:
            inner = ExactIndex.load(path)  # which rejects what is not its .npy either
        return cls(inner.dim, threshold, inner)
