"""Segmentation loss of DiffusionAD, eq. (10): smooth L1 + gamma * focal (Lin et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss on logits: mean over pixels of -(1 - p_t)^gamma log(p_t)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0, weight: float = 5.0) -> torch.Tensor:
    """L_mask = SmoothL1(M, M^) + weight * focal(M, M^)."""
    return F.smooth_l1_loss(torch.sigmoid(logits), target) + weight * focal_loss(logits, target, gamma)
