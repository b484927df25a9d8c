"""Vector search over face embeddings: one interface (`VectorIndex`), exact numpy search for
small galleries, the sign scan (C kernels) or faiss IVF lists for large ones, Milvus for a
server. Callers import from here; the modules behind it are this package's own business."""

from facelens.index.indexes import (
    ANN_THRESHOLD,
    AutoIndex,
    ExactIndex,
    IVFIndex,
    MilvusIndex,
    VectorIndex,
    large_index,
    large_index_kind,
)
from facelens.index.sign import SignScanIndex

__all__ = ["ANN_THRESHOLD", "AutoIndex", "ExactIndex", "IVFIndex", "MilvusIndex",
           "SignScanIndex", "VectorIndex", "large_index", "large_index_kind"]
