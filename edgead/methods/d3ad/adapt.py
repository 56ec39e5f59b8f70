"""Domain adaptation of the feature extractor (D3AD §3.4; the reference's ``Domain_adaptation``).

For ``adapt_epochs`` passes over the training images: reconstruct each batch through the trained
autoencoder and denoiser with a random start step t_max = roundup(8 k), k = 1..10 (no gradient),
then fine-tune a copy of the backbone so that features of the reconstruction agree with those of
the input:

    L = sum_stages mean(1 - cos(flat phi(x_hat), flat phi(x)))                      (reference)
      + lambda * sum_stages mean(1 - cos(flat phi(x), flat phi_0(x)))               (regulariser)

The regulariser towards the frozen ImageNet backbone phi_0 follows the paper's description (the
reference code has none); BatchNorm statistics stay frozen (the backbone runs in eval mode while
its weights train), so a few small batches cannot shift them.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ...core.knn import roundup
from ...core.preprocess import Preprocess
from ...core.schedulers.guided_ddim import GuidedDDIMScheduler
from ...training import distributed
from ...training.data import DeviceImages, to_model_input
from ...training.loop import run_loop
from ...training.staged import StagedRun


def flat_cosine_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.mean(1 - nn.functional.cosine_similarity(x.flatten(1), y.flatten(1))) for x, y in zip(a, b))


def adapt_backbone(
    run: StagedRun,
    backbone: nn.Module,
    encoder: nn.Module,
    unet: nn.Module,
    decoder: nn.Module,
    scheduler: GuidedDDIMScheduler,
    data: DeviceImages,
    spec: Preprocess,
    settings,
    batch: int,
    progress: bool,
) -> nn.Module:
    tc = run.config.train
    device = data.images.device
    frozen = copy.deepcopy(backbone).eval().requires_grad_(False)
    adapted = copy.deepcopy(backbone).eval().requires_grad_(True)  # eval: BatchNorm statistics stay
    optimiser = torch.optim.AdamW(adapted.parameters(), lr=settings.adapt_learning_rate)
    n_batches = int(np.ceil(len(data) / batch))
    total = settings.adapt_epochs * n_batches
    rng = np.random.default_rng(tc.seed)
    order: list[int] = []

    def denoise(x_t, t):
        return unet(x_t, torch.as_tensor(t, device=device)).sample

    def losses(x, x_hat, target):
        feats_x = adapted(x)
        loss_rec = flat_cosine_distance(adapted(x_hat), feats_x)  # both sides train, as the reference
        loss_reg = flat_cosine_distance(feats_x, target)
        return {
            "total": loss_rec + settings.adapt_regulariser * loss_reg,
            "reconstruction": loss_rec,
            "regulariser": loss_reg,
        }

    forward = distributed.data_parallel(losses, adapted)

    def step_fn():
        nonlocal order
        if not order:
            order = torch.randperm(
                len(data), generator=torch.Generator().manual_seed(int(rng.integers(1 << 31)))
            ).tolist()
        idx = torch.tensor([order.pop() for _ in range(min(batch, len(order)))], device=device)
        idx = idx[distributed.rank() :: distributed.world_size()]  # this process's part of the batch
        x = to_model_input(data.images[idx], spec)
        with torch.no_grad():
            z0 = encoder(x)
            k = rng.integers(1, 11, size=len(idx))
            t_max = np.array([roundup(settings.max_t / 10 * int(v)) for v in k])
            x_hat = decoder(scheduler.reconstruct(denoise, z0, t_max))
            target = frozen(x)
        out = forward(x, x_hat, target)
        optimiser.zero_grad(set_to_none=True)
        out["total"].backward()
        optimiser.step()
        return {k: v.detach() for k, v in out.items()}

    def save_fn(at: int, seconds: float, steps: int) -> None:
        run.save("adapt", {"feature_extractor": adapted}, at, seconds, steps, planned=total)

    run_loop(
        "adapt features",
        step_fn,
        save_fn,
        0,
        total,
        0.0,
        run.run_dir / "train_log.jsonl",
        checkpoint_every=total,
        log_every=max(1, n_batches // 4),
        progress=progress,
        stage="adapt",
    )
    return adapted.eval().requires_grad_(False)
