"""PatchCore-style baseline: patch features of the ImageNet backbone and a greedy coreset."""

from .fit import (
    PatchFeatures,
    build_patch_features,
    extract,
    fit_memory_bank,
    greedy_coreset,
    train,
)

__all__ = ["PatchFeatures", "build_patch_features", "extract", "fit_memory_bank", "greedy_coreset", "train"]
