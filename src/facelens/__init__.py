"""facelens: open, self-hosted face recognition on registry-shipped models."""

from facelens.api import analyze, detect, embed, verify
from facelens.errors import BadImageError, FacelensError, ModelMissingError, NoFaceError
from facelens.face import Attributes, Face, Quality, Verdict
from facelens.vision.decode import load_image

__all__ = [
    "Attributes", "BadImageError", "Face", "FacelensError", "ModelMissingError", "NoFaceError",
    "Quality", "Verdict", "analyze", "detect", "embed", "load_image", "verify",
]
__version__ = "0.1.0"
