"""Templates encrypted at rest: AES-256-GCM envelope encryption with crypto-shredding.

Each subject has its own random data key; the data key is stored only wrapped (encrypted) by
the master key, which lives outside the database: a 0600 key file under the data directory
or the `FACELENS_MASTER_KEY` environment variable (base64 of 32 bytes). Deleting a subject
deletes its wrapped data key, so every copy of its templates (backups included) is unreadable.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from facelens.errors import FacelensError

KEY_BYTES = 32
NONCE_BYTES = 12
ENV_KEY = "FACELENS_MASTER_KEY"


class MasterKeyError(FacelensError):
    """The master key is missing, malformed, too widely readable, or wrong for this data."""


def context(kind: str, owner: object) -> bytes:
    """The associated data that binds a sealed blob to what it is and whose (e.g. a template
    of one subject): a blob copied onto another row or kind fails to unseal."""
    return f"{kind}:{owner}".encode()


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """nonce ‖ AES-256-GCM(plaintext); `context` is authenticated, binding blob to its row."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unseal(key: bytes, blob: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
    except InvalidTag:
        raise MasterKeyError("decryption failed: wrong master key or tampered data") from None


def key_id(key: bytes) -> str:
    """A short public fingerprint that tells which master key wrapped a data key."""
    return hashlib.sha256(b"facelens-key-id" + key).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKey:
    key: bytes
    source: str
    """Where it came from (a path or the env var name); never the key itself."""

    @property
    def id(self) -> str:
        return key_id(self.key)

    def wrap(self, data_key: bytes, subject_id: str) -> bytes:
        return seal(self.key, data_key, b"subject:" + subject_id.encode())

    def unwrap(self, wrapped: bytes, subject_id: str) -> bytes:
        return unseal(self.key, wrapped, b"subject:" + subject_id.encode())

    def derive(self, purpose: str) -> bytes:
        """A separate key for another use (e.g. the index file), derived one-way."""
        return hashlib.sha256(b"facelens-derive:" + purpose.encode() + b":" + self.key).digest()

    def __repr__(self) -> str:  # never print key material in logs or tracebacks
        return f"MasterKey(id={self.id}, source={self.source})"


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise MasterKeyError(f"master key in {source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"master key in {source} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def write_key_file(path: Path, key: bytes) -> None:
    """Write a key file 0600 atomically (tmp + fsync + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise MasterKeyError(f"master key file {path} is readable by others (mode {mode:o}); "
                        f"run: chmod 600 {path}")
    return _decode(path.read_text(), str(path))


def load_master_key(key_file: Path, *, create: bool = True) -> MasterKey:
    """The env var wins; else the key file, created (0600) on first use when `create`."""
    if os.environ.get(ENV_KEY):
        return MasterKey(_decode(os.environ[ENV_KEY], ENV_KEY), ENV_KEY)
    if not key_file.exists():
        if not create:
            raise MasterKeyError(f"no master key: set {ENV_KEY} or create {key_file}")
        write_key_file(key_file, secrets.token_bytes(KEY_BYTES))
    return MasterKey(read_key_file(key_file), str(key_file))
