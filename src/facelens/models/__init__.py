"""Model files from registry packages, checked by sha256, opened lazily and once."""

from facelens.models.registry import CARDS, ModelCard, model_path

__all__ = ["CARDS", "ModelCard", "model_path"]
