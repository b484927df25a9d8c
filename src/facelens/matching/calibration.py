"""The calibration in force: operating points, open-set thresholds and confidence bands, all
read from one `Calibration` that the engine loads for its settings.

Files from `facelens eval lfw ROOT --degrade … --save` also hold one calibration per face
quality band (matching/quality_bands.py), chosen per comparison by `for_faces`.

Where it comes from, first found wins: the file `settings.calibration_file` names; the file
`facelens eval lfw ROOT --save` wrote into `settings.calibration_dir` for this SFace runtime;
the one shipped in the package (fitted on lfw-dev). Each SFace precision
has its own file: bf16 moves scores by ~1e-3, enough to pass ~2% more impostors than an fp32
threshold allows at FAR 1e-4, so bf16 is calibrated on its own scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import FacelensError, ModelMissingError
from facelens.matching.open_set import BANDS, Threshold, per_comparison_far
from facelens.matching.operating_points import FARS, OperatingPoint, far_key
from facelens.matching.quality_bands import QualityBand, cell_name, pair_cell, reweighted_probe

_FILES = {"openvino-bf16": "operating_points-bf16.json"}
_F32_FILE = "operating_points.json"  # openvino-f32 and onnxruntime agree to cosine 1 - 2e-7
_PACKAGE = "package:"


def calibration_file(label: str) -> str:
    """The file name holding the operating points of a runtime label
    (`facelens.models.base.runtime_label`)."""
    return _FILES.get(label, _F32_FILE)


@dataclass(frozen=True)
class Calibration:
    """One calibration: per embedder, thresholds at FARS, the impostor tail, the cascade band."""

    data: dict[str, Any]
    origin: str
    """Where it was read from: a file path, or "package:<file>" for the shipped one."""

    def _table(self, embedder: str, need: str) -> dict[str, Any]:
        table = self.data.get("embedders", {}).get(embedder)
        if not table or not table.get(need):
            raise ModelMissingError(f"embedder {embedder!r} has no calibrated {need} in "
                                    f"{self.origin}; run `facelens eval lfw ROOT --save`")
        return dict(table)

    @property
    def path(self) -> Path | None:
        """The file it was read from (None: the package's)."""
        return None if self.origin.startswith(_PACKAGE) else Path(self.origin)

    @property
    def source(self) -> str:
        """The population the thresholds were fitted on (e.g. "lfw-dev all-vs-all")."""
        return str(self.data.get("source", "lfw-dev"))

    def fusion_weight(self, default: float) -> float:
        return float(self.data.get("fusion_weight", default))

    @property
    def quality_bands(self) -> tuple[QualityBand, ...]:
        """The quality bands with their own calibration, best first (empty in files written
        before bands existed: one calibration for every face)."""
        return tuple(QualityBand(str(b["name"]), float(b["min_interocular_px"]),
                                 float(b["min_sharpness"]))
                     for b in self.data.get("quality_bands", ()))

    def for_faces(self, *faces: tuple[float, float] | None) -> tuple[str, Calibration]:
        """The cell of a comparison or a probe (its worse face's band and its better face's;
        each face given as (inter-ocular px, sharpness), None for an enrolled reference) and
        that cell's calibration: its fusion weight, operating points, tail and cascade.
        Without bands: ("", self)."""
        bands = self.quality_bands
        if not bands:
            return "", self
        return self._cell(*pair_cell(bands, *faces))

    def band_named(self, name: str) -> Calibration:
        """The calibration of the cell a verdict names (`Verdict.quality_band`, e.g. "fair" or
        "fair/fair"); this one when the name is empty or unknown (no bands)."""
        names = [b.name for b in self.quality_bands]
        parts = name.split("/")
        if not name or len(parts) > 2 or any(p not in names for p in parts):
            return self
        return self._cell(names.index(parts[0]), names.index(parts[-1]) if len(parts) > 1
                          else 0)[1]

    def _cell(self, worse: int, better: int) -> tuple[str, Calibration]:
        """A band's cell for a better face in band `better`; the band's own calibration when
        the file has no such cell (files written before cells, or a cell with too few
        pairs and no neighbour to borrow from). Two faces of the best band are decided by
        the clean calibration itself (the one `facelens calibrate` refits): on lfw-dev it
        gives the asked FAR there as closely as the band's own fit (docs/benchmarks.md)."""
        name = cell_name(self.quality_bands, worse, better)
        if worse == 0:
            return name, self
        entry = self.data["quality_bands"][worse]
        chosen = entry.get("cells", {}).get(self.quality_bands[better].name, entry)
        return name, Calibration(
            {"source": f"{self.data.get('quality_bands_source', self.source)}, {name}-quality "
                       "band" + (f" (cell {chosen['fallback']}'s)" if "fallback" in chosen
                                 else ""),
             "fusion_weight": chosen["fusion_weight"], "embedders": chosen["embedders"]},
            f"{self.origin}#{name}")

    def operating_point(self, embedder: str, far: float) -> OperatingPoint:
        """The calibrated point for `embedder` at the largest calibrated FAR not above `far`."""
        table = self._table(embedder, "thresholds")
        usable = [f for f in FARS if f <= far * (1 + 1e-9) and far_key(f) in table["thresholds"]]
        if not usable:
            raise FacelensError(f"FAR {far:g} is stricter than any calibrated point "
                                f"({', '.join(table['thresholds'])})")
        chosen = max(usable)
        band = table.get("cascade", {}).get(far_key(chosen))
        return OperatingPoint(embedder, chosen, float(table["thresholds"][far_key(chosen)]),
                              int(table["impostor_pairs"]), self.source,
                              (float(band[0]), float(band[1])) if band else None)

    def threshold_for_far(self, embedder: str, far: float) -> Threshold:
        """Threshold at any FAR: log-interpolated between measured points, extrapolated
        linearly in log10(FAR) below the smallest one the impostor pairs can measure."""
        table = self._table(embedder, "tail_fit")
        fars = np.array([p[0] for p in table["tail"]], np.float64)  # descending FAR
        thresholds = np.array([p[1] for p in table["tail"]], np.float64)
        x = np.log10(far)
        lx = np.log10(fars)
        if x >= lx[-1]:
            value = float(np.interp(x, lx[::-1], thresholds[::-1]))
            return Threshold(value, far, extrapolated=False)
        slope, intercept = table["tail_fit"]
        return Threshold(min(float(intercept + slope * x), 1.0), far, extrapolated=True)

    def open_set_threshold(self, embedder: str, fpir: float, comparisons: int) -> Threshold:
        """The threshold that keeps a query's chance of any false candidate among
        `comparisons` comparisons at `fpir` (matching/open_set.py)."""
        return self.threshold_for_far(embedder, per_comparison_far(fpir, comparisons))

    def confidence_band(self, embedder: str, score: float, comparisons: int = 1
                        ) -> tuple[str, float | None]:
        """("high", 1e-4) if `score` would still be a candidate at FPIR 1e-4 over
        `comparisons` comparisons (1 for a 1:1 check), and so on down to ("none", None)."""
        for name, fpir in BANDS:
            if score > self.open_set_threshold(embedder, fpir, comparisons).value:
                return name, fpir
        return "none", None


def probe_in_band(calibration: Calibration, vector: np.ndarray, embedder: str,
                  quality: tuple[float, float] | None, stored_weight: float
                  ) -> tuple[str, Calibration, np.ndarray]:
    """For a 1:N search: the probe's band (from its (inter-ocular px, sharpness)), that band's
    calibration (open-set thresholds via its `threshold_for_far`), and the probe vector to
    search with: a fused probe is rescaled so that its inner product with gallery vectors
    fused at `stored_weight` is the fused score at the band's weight."""
    band, banded = calibration.for_faces(quality)
    weight = banded.fusion_weight(stored_weight)
    if embedder == "fusion" and weight != stored_weight:
        vector = reweighted_probe(vector, stored_weight, weight)
    return band, banded, vector


def load_calibration(runtime_label: str, saved_dir: Path | None = None,
                     file: Path | None = None) -> Calibration:
    """The calibration for an SFace runtime label: `file` if given, else the one saved in
    `saved_dir` (settings.calibration_dir), else the package's."""
    name = calibration_file(runtime_label)
    if file is not None:
        return _read(Path(file))
    if saved_dir is not None and (saved := Path(saved_dir) / name).is_file():
        return _read(saved)
    return _packaged(name)


def _read(path: Path) -> Calibration:
    try:
        return Calibration(dict(json.loads(path.read_text())), str(path))
    except (OSError, ValueError) as e:
        raise FacelensError(f"calibration file {path} is unreadable: {e}") from None


@lru_cache(maxsize=4)
def _packaged(name: str) -> Calibration:
    data = resources.files("facelens.data").joinpath(name)
    return Calibration(dict(json.loads(data.read_text())) if data.is_file() else {},
                       f"{_PACKAGE}{name}")
