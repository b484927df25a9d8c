"""A gallery's vector index on disk: encrypted with a key derived from the master key.

The index backends save to a path; the plaintext passes through a RAM-backed temporary file
(/dev/shm where it exists) and only the AES-256-GCM sealed bytes reach the data directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from facelens.index import AutoIndex
from facelens.store.crypto import context, seal, unseal

_RAM = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def _path(index_dir: Path, gallery_id: int) -> Path:
    return index_dir / f"gallery-{gallery_id}.idx"


def save(index_dir: Path, gallery_id: int, key: bytes, index: AutoIndex) -> None:
    index_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_RAM) as scratch:
        plain = Path(scratch) / "index"
        index.save(plain)
        blob = seal(key, plain.read_bytes(), context("index", gallery_id))
    target = _path(index_dir, gallery_id)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def load(index_dir: Path, gallery_id: int, key: bytes, dim: int) -> AutoIndex | None:
    """The saved index, or None if absent, unreadable, of another dimension or `outdated`."""
    target = _path(index_dir, gallery_id)
    if not target.is_file():
        return None
    try:
        plain_bytes = unseal(key, target.read_bytes(), context("index", gallery_id))
        with tempfile.TemporaryDirectory(dir=_RAM) as scratch:
            plain = Path(scratch) / "index"
            plain.write_bytes(plain_bytes)
            index = AutoIndex.load(plain)
    except Exception:  # a cache: anything wrong with it means "rebuild from the database"
        return None
    return index if index.dim == dim and not index.outdated else None


def remove(index_dir: Path, gallery_id: int) -> None:
    _path(index_dir, gallery_id).unlink(missing_ok=True)
