"""Model files carried by npm packages (TFJS graph models), located and sha256-checked.

`make setup` unpacks each npm carrier, from a tarball checked against its pinned sha512, under
`<venv>/npm/node_modules/<package>/`; the registry's cards pin each file's sha256.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import onnxruntime as ort

from facelens.errors import ModelMissingError
from facelens.models.base import LazyModel, onnx_session
from facelens.models.registry import CARDS, checked_digest
from facelens.models.tfjs import cached_onnx


def npm_root() -> Path:
    """Where npm carriers are unpacked: $FACELENS_NPM_DIR, else `<venv>/npm`."""
    configured = os.environ.get("FACELENS_NPM_DIR")
    return Path(configured) if configured else Path(sys.prefix) / "npm"


def npm_model_path(name: str) -> Path:
    """The checked path of model `name`'s file in an npm carrier (registry.CARDS entry).

    Raises ModelMissingError naming the install step when the file is absent or its sha256
    differs from the pinned digest."""
    card = CARDS[name]
    path = npm_root() / "node_modules" / card.module / card.file
    hint = f"npm package {card.package}@{card.version}: run `make setup`"
    if not path.is_file():
        raise ModelMissingError(f"model file {path} is missing ({hint})")
    digest = checked_digest(path, card.sha256)
    if digest != card.sha256:
        raise ModelMissingError(f"model file {path} fails its sha256 check ({digest[:12]}… "
                                f"!= {card.sha256[:12]}…): reinstall the {hint}")
    return path


class TfjsModel(LazyModel[ort.InferenceSession]):
    """A TFJS graph model from an npm carrier, converted to ONNX once, run by onnxruntime.

    Subclasses set `name` (the card of the `.json` graph) and `weights` (the card of its
    weight shard); both files are sha256-checked before conversion."""

    weights: str

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self._threads = threads

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._open(npm_model_path(self.name))
        return self._session

    def _open(self, path: Path) -> ort.InferenceSession:
        npm_model_path(self.weights)
        digests = (CARDS[self.name].sha256, CARDS[self.weights].sha256)
        return onnx_session(cached_onnx(path, digests, self.name), self._threads)
