"""D3AD's feature extractor: EfficientNet-Lite0 (ImageNet, optionally domain-adapted) at strides 8 and 16.

Stride 8 feeds the kNN prior (average-pooled to prior_pool x prior_pool, flattened); strides 8 and
16 feed the feature-distance map (the reference code leaves out its first, stride-4, stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAP_STAGES = (1, 2)
"""Indices into the backbone's (stride 4, 8, 16) features used for the map."""
PRIOR_STAGE = 1


def prior_features(features8: torch.Tensor, pool: int) -> torch.Tensor:
    """[B, C, h, w] stride-8 features -> [B, C * pool * pool] (adaptive average pooling, flattened)."""
    return F.adaptive_avg_pool2d(features8, pool).flatten(1)
