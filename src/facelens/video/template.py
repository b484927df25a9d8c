"""A track's identity template: the quality-weighted mean of the embeddings of its embedded
frames (IJB-style template matching), so no single frame names a person on its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facelens.geometry import l2_normalize

MIN_WEIGHT = 0.05
"""A frame's weight never falls to zero: a soft face still adds evidence."""


@dataclass
class Template:
    ticks: list[int] = field(default_factory=list)
    """The processed-frame index of each embedded frame."""
    weights: list[float] = field(default_factory=list)
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """Per embedder, one embedding per embedded frame."""

    def add(self, tick: int, quality: float, vectors: dict[str, np.ndarray]) -> None:
        self.ticks.append(tick)
        self.weights.append(max(quality, MIN_WEIGHT))
        for embedder, vector in vectors.items():
            self.vectors.setdefault(embedder, []).append(vector)

    def __len__(self) -> int:
        return len(self.ticks)

    def span(self) -> int:
        """Processed frames between the first and the last embedded frame."""
        return self.ticks[-1] - self.ticks[0] if self.ticks else 0

    def mean(self, embedder: str, last_only: bool = False) -> np.ndarray:
        """The template vector of `embedder` (the last frame's alone with `last_only`). A fused
        vector [√w·sface-flip, √(1−w)·dlib] is averaged per half, so its dot product stays
        the weighted sum of two cosines."""
        stacked = np.stack(self.vectors[embedder])
        weights = np.asarray(self.weights, np.float32)
        if last_only:
            stacked, weights = stacked[-1:], weights[-1:]
        mean = (weights[:, None] * stacked).sum(0)
        if embedder != "fusion":
            return l2_normalize(mean[None])[0].astype(np.float32)
        half = len(mean) // 2
        scales = [np.linalg.norm(stacked[0, :half]), np.linalg.norm(stacked[0, half:])]
        parts = [l2_normalize(mean[None, :half])[0] * scales[0],
                 l2_normalize(mean[None, half:])[0] * scales[1]]
        return np.concatenate(parts).astype(np.float32)
