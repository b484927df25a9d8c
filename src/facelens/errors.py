"""Errors facelens raises. Each maps to one CLI exit code and (later) one HTTP status."""

from __future__ import annotations


class FacelensError(Exception):
    """Base class: the message is one human-readable line."""

    exit_code = 2


class BadImageError(FacelensError):
    """The input is not an image we accept: unknown format, truncated, empty, too big."""

    exit_code = 2


class NoFaceError(FacelensError):
    """The image decoded fine but holds no face good enough for the request."""

    exit_code = 1


class ModelMissingError(FacelensError):
    """A model file is absent or fails its sha256 check; the message names what to install."""

    exit_code = 3


class UnsupportedImageError(BadImageError):
    """A well-formed file in a format the caller does not accept (e.g. GIF where JPEG/PNG/WebP)."""


class ImageTooLargeError(BadImageError):
    """Over the byte or pixel limit (checked before any pixel is decoded)."""


class NotFoundError(FacelensError):
    """The gallery, subject, event or key named does not exist (bad input: exit code 2)."""


class ConflictError(FacelensError):
    """The thing to create exists already."""
