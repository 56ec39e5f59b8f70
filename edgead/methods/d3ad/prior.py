"""D3AD's kNN prior: the memory of pooled training features and the histogram of their distances.

Each training image's severity is its mean L1 distance to its k nearest *other* training images
(leave-one-out; the reference code lets each image count itself as a neighbour at distance 0,
which makes training distances smaller than those of any unseen image); ``np.histogram`` of those
gives the bin edges the runtime places a new image into (edgead.core.knn.KnnPrior).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.errors import DataError
from ...core.preprocess import Preprocess
from ...training.data import DeviceImages, to_model_input
from .features import PRIOR_STAGE, prior_features


@torch.no_grad()
def fit_prior(
    backbone: nn.Module, data: DeviceImages, spec: Preprocess, k: int, bins: int, pool: int, batch: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(memory bank [N, D] float32, bin edges [bins + 1] float64, leave-one-out distances [N])."""
    n = len(data)
    if n < k + 1:
        raise DataError(
            f"the kNN prior needs at least {k + 1} training images for k = {k} neighbours "
            f"(each image's distance to its {k} nearest others), got {n}; add good images or "
            f"lower d3ad.knn_k"
        )
    feats = [
        prior_features(backbone(to_model_input(data.images[i : i + batch], spec))[PRIOR_STAGE], pool)
        for i in range(0, n, batch)
    ]
    bank = torch.cat(feats).double().cpu()
    d = torch.cdist(bank, bank, p=1)
    d.fill_diagonal_(float("inf"))
    loo = d.topk(k, dim=1, largest=False).values.mean(1).numpy()
    _, edges = np.histogram(loo, bins)
    return bank.float().numpy(), edges, loo
