"""The patch kNN map of a latent method, read from the bundle (numpy); ``core.fusion.fuse`` mixes it in.

    knn = nearest-neighbour distance of each patch descriptor to the bundle's ``patch_bank``
    map = (1 - w) * (reconstruction - mu_r) / sd_r + w * (knn - mu_k) / sd_k

edgead/core/fusion.py says why; the export fits mu, sd on anomaly-free calibration images and
chooses w on synthetic anomalies made from them.
"""

from __future__ import annotations

import numpy as np

from ..core.bundle import Bundle
from ..core.errors import BundleError
from ..core.fusion import FusionParams
from ..core.knn import bank_scorer, distance_map

PATCHES = "patches"
"""The feature_extractor output holding the patch descriptors."""


class PatchKnnMap:
    """The bundle's patch memory bank as a map: patch descriptors [B, C, h, w] -> distances [B, H, W]."""

    def __init__(self, bundle: Bundle, fusion: FusionParams, probes: int = 0):
        values = [fusion.knn_weight, *fusion.reconstruction, *fusion.knn]
        if (
            len(fusion.reconstruction) != 2
            or len(fusion.knn) != 2
            or not np.all(np.isfinite(values))
            or not 0.0 <= fusion.knn_weight <= 1.0
            or min(fusion.reconstruction[1], fusion.knn[1]) <= 0
        ):
            raise BundleError(
                f"bundle {bundle.root}: manifest params.fusion must hold a knn_weight in [0, 1] and "
                f"[mean, std > 0] pairs of finite numbers, got {fusion}"
            )
        bank = bundle.extra("patch_bank")
        outputs = {o.name: o for o in bundle.manifest.stage("feature_extractor").outputs}
        if PATCHES not in outputs:
            raise BundleError(
                f"bundle {bundle.root}: the feature_extractor has no {PATCHES!r} output for the "
                "patch kNN map; re-export the run with this edgead"
            )
        channels = outputs[PATCHES].shape[1]
        if bank.ndim != 2 or bank.shape[0] == 0 or bank.shape[1] != channels:
            raise BundleError(
                f"bundle {bundle.root}: the patch bank has shape {bank.shape}, the feature_extractor's "
                f"patch descriptors have {channels} channels"
            )
        self.scorer = bank_scorer(bundle, "patch_bank", bank, probes)

    def __call__(self, patches: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return distance_map(self.scorer, patches, size)
