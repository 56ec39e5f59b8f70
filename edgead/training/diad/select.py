"""DiAD's checkpoint and start step, chosen on synthetic anomalies made from held-out good images.

The reference code picks its checkpoint by test-set AUROC; edgead never looks at test images. For
each stage-B snapshot and candidate start step, the held-out good images and one synthetic anomaly
made from each (edgead's training synthesis) are reconstructed exactly as the runtime will, scored
with the runtime's own map code (edgead.core.maps and scoring, numpy), and the pair with the
best image AUROC wins (ties: the later snapshot, the larger start step).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.maps import feature_distance_map
from ...core.metrics import auroc
from ...core.schedulers.guided_ddim import GuidedDDIMScheduler
from ...core.scoring import image_scores, smooth


@torch.no_grad()
def diad_maps(images: torch.Tensor, encoder: nn.Module, hint_encoder: nn.Module, denoiser: nn.Module,
              decoder: nn.Module, features: nn.Module, scheduler: GuidedDDIMScheduler, start: int,
              noise: torch.Tensor, batch: int = 8) -> np.ndarray:
    """Anomaly maps [N, H, W] of model-space images, as the DiAD runtime computes them."""
    out = []
    size = tuple(images.shape[-2:])
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        z0, hint = encoder(x), hint_encoder(x)
        t_max = np.full(len(x), start)
        z = scheduler.reconstruct(lambda z_t, t: denoiser(z_t, torch.as_tensor(t), hint), z0, t_max,
                                  noise.expand(len(x), -1, -1, -1))
        x_hat = decoder(z)
        f, f_hat = features(x), features(x_hat)
        out.append(feature_distance_map([a.numpy() for a in f], [b.numpy() for b in f_hat], size))
    return np.concatenate(out)


def score_candidates(candidates: dict[int, nn.Module], starts: list[int], x: torch.Tensor, labels: np.ndarray,
                     encoder, hint_encoders: dict[int, nn.Module], decoder, features, scheduler, noise,
                     sigma: float, pool: int) -> list[dict]:
    rows = []
    for step, denoiser in candidates.items():
        for start in starts:
            maps = smooth(diad_maps(x, encoder, hint_encoders[step], denoiser, decoder, features, scheduler,
                                    start, noise), sigma)
            scores = image_scores(maps, "pooled_max", pool=pool)
            rows.append({"snapshot": step, "start_step": start, "synthetic_auroc": round(auroc(labels, scores), 4)})
    return rows


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["synthetic_auroc"], r["snapshot"], r["start_step"]))
