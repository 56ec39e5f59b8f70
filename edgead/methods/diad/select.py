"""DiAD's checkpoint and start step, chosen on synthetic anomalies made from held-out good images.

The reference code picks its checkpoint by test-set AUROC; edgead never looks at test images. For
each stage-B snapshot and candidate start step, the held-out good images and one synthetic anomaly
made from each (edgead's training synthesis) are reconstructed exactly as the runtime will, scored
with the runtime's own map code (edgead.core.maps and scoring, numpy), and the pair with the
best image AUROC wins (ties: the later snapshot, the larger start step). Under a time budget the
candidates are scored latest snapshot first, and none is started (or finished) that the time left cannot
hold, its cost measured on the candidates and batches before; when not even one fits, the run keeps the
latest snapshot and the first start step, unscored, and says so.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.maps import feature_distance_map
from ...core.metrics import auroc
from ...core.schedulers.guided_ddim import GuidedDDIMScheduler
from ...core.scoring import image_scores, smooth
from ...training.budget import now


@torch.no_grad()
def diad_maps(
    images: torch.Tensor,
    encoder: nn.Module,
    hint_encoder: nn.Module,
    denoiser: nn.Module,
    decoder: nn.Module,
    features: nn.Module,
    scheduler: GuidedDDIMScheduler,
    start: int,
    noise: torch.Tensor,
    batch: int = 8,
    deadline: float | None = None,
) -> np.ndarray | None:
    """Anomaly maps [N, H, W] of model-space images, as the DiAD runtime computes them; None as soon as the
    batches done show that the rest would end past ``deadline`` (perf_counter time)."""
    out = []
    size = tuple(images.shape[-2:])
    began = now()
    for i in range(0, len(images), batch):
        if out and deadline is not None and now() + (now() - began) / i * (len(images) - i) > deadline:
            return None
        x = images[i : i + batch]
        z0, hint = encoder(x), hint_encoder(x)
        t_max = np.full(len(x), start)
        z = scheduler.reconstruct(
            lambda z_t, t, hint=hint: denoiser(z_t, torch.as_tensor(t, device=z_t.device), hint),
            z0,
            t_max,
            noise.expand(len(x), -1, -1, -1),
        )
        x_hat = decoder(z)
        f, f_hat = features(x), features(x_hat)
        out.append(feature_distance_map([a.cpu().numpy() for a in f], [b.cpu().numpy() for b in f_hat], size))
    return np.concatenate(out)


def score_candidates(
    candidates: dict[int, nn.Module],
    starts: list[int],
    x: torch.Tensor,
    labels: np.ndarray,
    encoder,
    hint_encoders: dict[int, nn.Module],
    decoder,
    features,
    scheduler,
    noise,
    sigma: float,
    pool: int,
    deadline: float | None = None,
) -> list[dict]:
    """One row per (snapshot, start step) scored; ``deadline`` (perf_counter time): stop before a candidate
    that would end past it (none at all when even the first would: the caller keeps a default)."""
    rows, began = [], now()
    for step in sorted(candidates, reverse=True):
        for start in starts:
            if rows and deadline is not None and now() + (now() - began) / len(rows) > deadline:
                return rows
            maps = diad_maps(
                x,
                encoder,
                hint_encoders[step],
                candidates[step],
                decoder,
                features,
                scheduler,
                start,
                noise,
                deadline=deadline,
            )
            if maps is None:
                return rows
            scores = image_scores(smooth(maps, sigma), "pooled_max", pool=pool)
            rows.append({"snapshot": step, "start_step": start, "synthetic_auroc": round(auroc(labels, scores), 4)})
    return rows


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["synthetic_auroc"], r["snapshot"], r["start_step"]))
