"""facelens: open, self-hosted face recognition on registry-shipped models.

The verbs and records below are imported on first use, so `import facelens.cli` (and
`facelens --help`) does not load the models' runtimes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facelens.api import analyze, compare, detect, embed, verify
    from facelens.errors import BadImageError, FacelensError, ModelMissingError, NoFaceError
    from facelens.face import Attributes, Comparison, Face, Quality, Verdict
    from facelens.vision.decode import load_image

_HOMES = {
    "analyze": "facelens.api", "detect": "facelens.api", "embed": "facelens.api",
    "verify": "facelens.api", "compare": "facelens.api",
    "BadImageError": "facelens.errors", "FacelensError": "facelens.errors",
    "ModelMissingError": "facelens.errors", "NoFaceError": "facelens.errors",
    "Attributes": "facelens.face", "Face": "facelens.face", "Quality": "facelens.face",
    "Verdict": "facelens.face", "Comparison": "facelens.face",
    "load_image": "facelens.vision.decode",
}
__all__ = [
    "Attributes", "BadImageError", "Comparison", "Face", "FacelensError", "ModelMissingError",
    "NoFaceError", "Quality", "Verdict", "analyze", "compare", "detect", "embed", "load_image",
    "verify",
]
assert set(__all__) == set(_HOMES)
_SUBMODULES = frozenset({"api", "settings"})
"""Reached as attributes too: `facelens.api.Engine(facelens.settings.Settings(...))` (README)."""
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"facelens.{name}")  # the import binds it here as well
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'facelens' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # found once, then a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES, *_SUBMODULES])
