"""The patch kNN map that joins a latent method's reconstruction map (declarations, torch-free).

D3AD and DiAD already compute pretrained CNN features of the input; the distance of each patch
descriptor to its nearest neighbour among the training images' patches (PatchCore's map, from the
same features) says where the input looks unlike anything normal, the reconstruction map says where
the model could not reproduce it. Both are z-scored on anomaly-free calibration images and mixed:

    map = (1 - w) * (reconstruction - mu_r) / sd_r + w * (knn - mu_k) / sd_k

w is chosen per bundle at export on synthetic anomalies made from held-out good images (never test
images) among ``candidates`` (edgead/export/fusion_weight.py: the weight that sets their image scores
furthest from the good images'), or fixed with ``--set <method>.knn.weight=W`` (0: the
reconstruction alone, the papers' map; 1: the kNN map alone, the baseline's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import ConfigError
from .knn import EXACT_BELOW, PROBES, check_search


@dataclass
class PatchKnnConfig:
    weight: float | None = None
    """Share of the kNN map in the anomaly map; None: chosen at export among ``candidates``."""
    candidates: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(16))
    """Weights compared on synthetic anomalies: 0, 0.05, ..., 0.75. The reconstruction keeps at least a quarter
    of the map: the kNN map alone is the baseline, not a diffusion detector (set weight=1 to measure it)."""
    coreset_fraction: float = 0.1
    """Share of the training patches kept in the memory bank (greedy k-center coreset, as the baseline)."""
    aggregation: Literal["upsample_first", "pool_first"] = "upsample_first"
    """Patch descriptor as the baseline's (``patchcore.aggregation``); runs trained before edgead 0.9 keep
    ``pool_first``."""
    exact_below: int = EXACT_BELOW
    """A bank with fewer rows is searched exactly; a larger one through k-means cells fitted at export."""
    probes: int = PROBES
    """Cells searched per patch in a large bank (0: always exact)."""

    def check(self, where: str) -> None:
        weights = ([] if self.weight is None else [self.weight]) + list(self.candidates)
        if not self.candidates or any(not 0.0 <= w <= 1.0 for w in weights):
            raise ConfigError(
                f"{where}.weight and {where}.candidates must lie in [0, 1] (candidates non-empty), "
                f"got {self.weight} and {list(self.candidates)}"
            )
        if not 0 < self.coreset_fraction <= 1:
            raise ConfigError(f"{where}.coreset_fraction must be in (0, 1], got {self.coreset_fraction}")
        check_search(self.exact_below, self.probes, where)


@dataclass
class FusionParams:
    """How the runtime mixes the two maps (manifest ``params.fusion``); fitted at export."""

    knn_weight: float = 0.0
    reconstruction: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """Mean and standard deviation of the reconstruction map's pixels on the anomaly-free calibration images."""
    knn: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """The same for the kNN map."""


def fuse(reconstruction: np.ndarray, knn: np.ndarray, fusion: FusionParams) -> np.ndarray:
    """The anomaly map from both maps, each standardised with its statistics on good images."""
    (mr, sr), (mk, sk) = fusion.reconstruction, fusion.knn
    w = fusion.knn_weight
    out = (1.0 - w) * (reconstruction - mr) / max(sr, 1e-12) + w * (knn - mk) / max(sk, 1e-12)
    return out.astype(np.float32)
