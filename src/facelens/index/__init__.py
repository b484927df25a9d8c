"""Vector search over face embeddings: one interface (`VectorIndex`, base.py), exact numpy
search for small galleries (exact.py), the sign scan on its C kernels (sign.py) or faiss IVF
lists (ivf.py) for large ones, chosen by `AutoIndex` (auto.py), and Milvus for a server
(milvus.py). Callers import from here; the modules behind it are this package's own business."""

from facelens.index.auto import AutoIndex, large_index, large_index_kind
from facelens.index.base import VectorIndex
from facelens.index.exact import ExactIndex
from facelens.index.ivf import IVFIndex
from facelens.index.milvus import MilvusIndex
from facelens.index.sign import SignScanIndex

__all__ = ["AutoIndex", "ExactIndex", "IVFIndex", "MilvusIndex", "SignScanIndex", "VectorIndex",
           "large_index", "large_index_kind"]
