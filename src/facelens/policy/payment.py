"""The payment rule: a decision that moves money is never made on a still image."""

from __future__ import annotations

from collections.abc import Collection

PAYMENT_MARKER = "payment"
"""A gallery purpose starting with this, or a key scope of this name, marks payment use."""


def liveness_required(key_scopes: Collection[str], gallery_purpose: str | None = None) -> bool:
    """True if a decision for a caller holding `key_scopes`, about a subject of a gallery with
    `gallery_purpose` (None: no gallery, e.g. two images), needs a passed liveness session."""
    return PAYMENT_MARKER in key_scopes or (
        gallery_purpose is not None and gallery_purpose.startswith(PAYMENT_MARKER))
