"""A gallery's vector index on disk: encrypted with a key derived from the master key.

The index backends save to a path; the plaintext passes through a RAM-backed temporary file
(/dev/shm where it exists) and only the AES-256-GCM sealed bytes reach the data directory.
The gallery version the index is current at is sealed with it: a file at the database's
version is used as it is, any other is rebuilt.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from facelens.index import AutoIndex
from facelens.store.crypto import context, seal, unseal

_RAM = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
_VERSION = struct.Struct("<q")


def _path(index_dir: Path, gallery_id: int) -> Path:
    return index_dir / f"gallery-{gallery_id}.idx"


def save(index_dir: Path, gallery_id: int, key: bytes, index: AutoIndex, version: int = -1
         ) -> None:
    """Seal `index`, current at gallery `version` (-1: unknown), into the data directory."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_RAM) as scratch:
        plain = Path(scratch) / "index"
        index.save(plain)
        blob = seal(key, _VERSION.pack(version) + plain.read_bytes(),
                    context("index", gallery_id))
    target = _path(index_dir, gallery_id)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def load(index_dir: Path, gallery_id: int, key: bytes, dim: int) -> AutoIndex | None:
    """The saved index, or None if absent, unreadable, of another dimension or `outdated`."""
    saved = load_versioned(index_dir, gallery_id, key, dim)
    return saved[0] if saved else None


def load_versioned(index_dir: Path, gallery_id: int, key: bytes, dim: int
                   ) -> tuple[AutoIndex, int] | None:
    """The saved index and the gallery version it is current at, or None (as `load`)."""
    target = _path(index_dir, gallery_id)
    if not target.is_file():
        return None
    try:
        plain_bytes = unseal(key, target.read_bytes(), context("index", gallery_id))
        (version,) = _VERSION.unpack_from(plain_bytes)
        with tempfile.TemporaryDirectory(dir=_RAM) as scratch:
            plain = Path(scratch) / "index"
            plain.write_bytes(plain_bytes[_VERSION.size:])
            index = AutoIndex.load(plain)
    except Exception:  # a cache: anything wrong with it means "rebuild from the database"
        return None
    return (index, version) if index.dim == dim and not index.outdated else None


def remove(index_dir: Path, gallery_id: int) -> None:
    _path(index_dir, gallery_id).unlink(missing_ok=True)
