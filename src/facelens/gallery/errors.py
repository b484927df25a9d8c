"""What a gallery request can break: a rule (no consent, unknown embedder…), an absent gallery or
subject, a name already taken. Each refuses before anything changes."""

from __future__ import annotations

from facelens.errors import ConflictError, FacelensError, NotFoundError


class GalleryError(FacelensError):
    """A gallery request that breaks a rule (no consent, unknown gallery, …); changes nothing."""


class GalleryNotFound(GalleryError, NotFoundError):
    """No such gallery or subject."""


class GalleryExists(GalleryError, ConflictError):
    """A gallery of that name exists."""
