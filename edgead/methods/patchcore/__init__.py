"""PatchCore-style baseline (Roth et al. 2022) on EfficientNet-Lite0 features; its kNN scorer is
also D3AD's prior. The declaration (torch-free); this folder holds the rest (``train.py``, ``export.py``,
``pipeline.py``) and a README."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...core.errors import ConfigError
from ...core.knn import EXACT_BELOW, PROBES, check_search
from ...core.methods import MethodSpec


@dataclass
class PatchCoreConfig:
    layers: tuple[int, ...] = (1, 2)
    """Feature scales (0: stride 4, 1: stride 8, 2: stride 16) that form a patch descriptor."""
    coreset_fraction: float = 0.1
    """Share of training patches kept by greedy k-center coreset subsampling (1.0 keeps all): 10%, PatchCore's
    and anomalib's default."""
    neighbourhood: int = 3
    """Patch features are averaged over a neighbourhood x neighbourhood window."""
    aggregation: Literal["upsample_first", "pool_first"] = "upsample_first"
    """Order of upsampling and neighbourhood averaging (``training.backbone.aggregate_patches``); runs trained
    before edgead 0.9 keep ``pool_first``."""
    smoothing_sigma: float = 4.0
    """Gaussian blur of the distance map before the max (PatchCore: sigma 4)."""
    exact_below: int = EXACT_BELOW
    """A memory bank with fewer rows is searched exactly; a larger one through k-means cells fitted at export."""
    probes: int = PROBES
    """Cells searched per patch in a large bank (0: always exact)."""

    def check(self, config, where: str) -> None:
        if not self.layers or any(i not in (0, 1, 2) for i in self.layers):
            raise ConfigError(f"{where}.layers must be a non-empty subset of (0, 1, 2), got {self.layers}")
        if not 0 < self.coreset_fraction <= 1:
            raise ConfigError(f"{where}.coreset_fraction must be in (0, 1], got {self.coreset_fraction}")
        check_search(self.exact_below, self.probes, where)
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            raise ConfigError(f"{where}.neighbourhood must be odd and >= 1, got {self.neighbourhood}")
        if self.smoothing_sigma < 0:
            raise ConfigError(f"{where}.smoothing_sigma must be >= 0, got {self.smoothing_sigma}")


@dataclass
class PatchCoreParams:
    feature_stride: int
    neighbourhood: int
    memory_bank_size: int
    knn_probes: int = 0
    """Cells of the memory bank searched per patch (0: exact search; bundles before edgead 0.11)."""


SPEC = MethodSpec(
    name="patchcore",
    summary="PatchCore-style baseline: nearest-neighbour distance of ImageNet CNN patch features",
    config=PatchCoreConfig,
    params=PatchCoreParams,
    stages=("feature_extractor",),
    extras=("memory_bank",),
    trainer="edgead.methods.patchcore.train:train",
    exporter="edgead.methods.patchcore.export:PatchCoreExport",
    pipeline="edgead.methods.patchcore.pipeline:PatchCorePipeline",
    tiny=("patchcore.coreset_fraction=0.05",),
)
