"""A subject's PIN, the second factor of a door decision: only its scrypt hash is stored."""

from __future__ import annotations

import hashlib
import hmac
import os

from facelens.gallery.errors import GalleryError


def check_format(pin: str) -> None:
    """Refuse (GalleryError) anything but 4 to 12 digits 0-9 (isdigit alone takes "١٢٣٤" or
    "12³¹", which no keypad types)."""
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise GalleryError("a PIN is 4 to 12 digits")


def hash_pin(pin: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_pin(stored: str, pin: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(candidate.hex(), digest)
