"""The KL autoencoder of the latent methods, trained from scratch on the product's good images.

Loss (methods/d3ad/README.md; no Stable Diffusion weights exist here): L1 + perceptual (distance of
channel-normalised EfficientNet-Lite0 features at strides 4/8/16, LPIPS without learned weights)
+ KL (1e-6, on the per-sample sum as in latent diffusion). Trained on random crops with
horizontal flips (the networks are convolutional). Afterwards the latent scale is fixed as
1 / std of the training images' latent means (SD's 0.18215 plays this role), so the denoiser sees
unit-variance latents; encoder and decoder stages carry the scale inside their graphs. The
posterior *mean* is the latent at inference (determinism).
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.preprocess import Preprocess
from .. import distributed, precision
from ..backbone import load_backbone
from ..checkpoint import load_weights, restore_progress
from ..data import DeviceImages, from_unit, numpy_batch, to_model_input
from ..loop import run_loop, step_seeding
from ..staged import StagedRun
from .networks import LatentNetworkConfig, build_autoencoder


class LatentEncoder(nn.Module):
    """image in [-1, 1] -> scaled posterior mean (the ``encoder`` stage)."""

    def __init__(self, autoencoder: nn.Module, scale: float):
        super().__init__()
        self.autoencoder, self.scale = autoencoder, float(scale)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(image).latent_dist.mean * self.scale


class LatentDecoder(nn.Module):
    """scaled latent -> image in [-1, 1] (the ``decoder`` stage)."""

    def __init__(self, autoencoder: nn.Module, scale: float):
        super().__init__()
        self.autoencoder, self.scale = autoencoder, float(scale)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latent / self.scale).sample.clamp(-1.0, 1.0)


def perceptual_distance(features: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    fa, fb = features(a), features(b)
    total = a.new_zeros(())
    for x, y in zip(fa, fb):
        x = x / (x.norm(dim=1, keepdim=True) + 1e-6)
        y = y / (y.norm(dim=1, keepdim=True) + 1e-6)
        total = total + ((x - y) ** 2).sum(1).mean()
    return total


def _random_crop(x: torch.Tensor, crop: int, g: torch.Generator) -> torch.Tensor:
    """One random crop for the batch; the offsets stay on the device (no host sync per step on a GPU)."""
    h, w = x.shape[-2:]
    if crop >= min(h, w):
        return x
    top = torch.randint(0, h - crop + 1, (1,), generator=g, device=g.device)
    left = torch.randint(0, w - crop + 1, (1,), generator=g, device=g.device)
    span = torch.arange(crop, device=x.device)
    return x.index_select(-2, top + span).index_select(-1, left + span)


def train_autoencoder(
    run: StagedRun,
    net: LatentNetworkConfig,
    data: DeviceImages,
    spec: Preprocess,
    settings,
    device: torch.device,
    progress: bool,
    backbone_weights=None,
) -> nn.Module:
    """Stage ``autoencoder``: returns the trained AutoencoderKL and records the latent scale."""
    tc = run.config.train
    size = spec.image_size[0]
    ae = build_autoencoder(net, size, backbone_weights).to(device)
    trained = [p for p in ae.parameters() if p.requires_grad]  # a pretrained encoder stays frozen
    optimiser = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=0.0)
    state = run.start("autoencoder")
    step, elapsed = restore_progress(run.run_dir, state, {"autoencoder": ae}, optimiser)
    features = load_backbone(backbone_weights).to(device)
    gen, reseed = step_seeding(device, tc.seed, 1, step)
    batch = distributed.local_batch(settings.batch_size, "the autoencoder's batch size")
    layout = precision.memory_format(tc, device)
    ae.to(memory_format=layout)
    features.to(memory_format=layout)
    ae.train()

    def losses(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with precision.autocast(tc, device):
            posterior = ae.encode(x).latent_dist
            rec = ae.decode(posterior.sample(generator=gen)).sample
            perceptual = perceptual_distance(features, rec, x)
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        perceptual = perceptual.float()
        kl = posterior.kl().float().mean()
        return {
            "total": l1 + settings.perceptual_weight * perceptual + settings.kl_weight * kl,
            "l1": l1,
            "perceptual": perceptual,
            "kl": kl,
        }

    forward = distributed.data_parallel(losses, ae)

    def step_fn():
        reseed()
        x01, _ = data.draw(batch, gen)
        flip = torch.rand(x01.shape[0], 1, 1, 1, generator=gen, device=device) < 0.5
        x = from_unit(_random_crop(torch.where(flip, x01.flip(-1), x01), settings.crop, gen), spec)
        out = forward(x.contiguous(memory_format=layout))
        optimiser.zero_grad(set_to_none=True)
        out["total"].backward()
        optimiser.step()
        return {k: v.detach() for k, v in out.items()}

    def save_fn(at: int, seconds: float, total: int) -> None:
        run.save("autoencoder", {"autoencoder": ae}, at, seconds, total, optimiser, planned=settings.steps)

    run_loop(
        "train autoencoder",
        step_fn,
        save_fn,
        step,
        settings.steps,
        elapsed,
        run.run_dir / "train_log.jsonl",
        checkpoint_every=tc.checkpoint_every,
        log_every=tc.log_every,
        progress=progress,
        stage="autoencoder",
    )
    ae.eval()
    if run.complete("autoencoder") and "latent_scale" not in run.progress["autoencoder"]:
        mean, _ = posterior_moments(ae, data, spec)
        scale = float(1.0 / mean.std().clamp_min(1e-6))
        done = run.progress["autoencoder"]  # as the loop left it (a budget may have shortened it)
        run.save(
            "autoencoder",
            {"autoencoder": ae},
            done["steps_done"],
            done["seconds"],
            done["steps"],
            None,
            {"latent_scale": scale},
            planned=done.get("planned_steps"),
        )
    return ae


@torch.no_grad()
def posterior_moments(ae: nn.Module, data: DeviceImages, spec: Preprocess, batch: int = 8):
    """Posterior mean and std of every training image (unscaled), on the data's device."""
    means, stds = [], []
    for i in range(0, len(data), batch):
        dist = ae.encode(to_model_input(data.images[i : i + batch], spec)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


RECONSTRUCTION_GAP = 2.0
"""A product that one shared autoencoder reproduces this many times worse than the best one is flagged."""


@torch.no_grad()
def reconstruction_error(
    encoder: LatentEncoder, decoder: LatentDecoder, images_u8, spec: Preprocess, batch: int = 8
) -> float:
    """Mean absolute encode-decode error, in [0, 1] units, of uint8 [N, H, W, 3] images."""
    device = next(encoder.parameters(), torch.zeros(())).device
    total = 0.0
    for i in range(0, len(images_u8), batch):
        x = numpy_batch(images_u8[i : i + batch], spec).to(device)
        total += float((decoder(encoder(x)) - x).abs().mean(dim=(1, 2, 3)).sum()) / 2
    return total / len(images_u8)


def reconstruction_gap(errors: dict[str, float]) -> str | None:
    """A warning when one shared autoencoder reproduces some product far worse than another."""
    best, worst = min(errors, key=errors.get), max(errors, key=errors.get)
    if errors[worst] <= RECONSTRUCTION_GAP * errors[best]:
        return None
    return (
        f"the shared autoencoder reproduces {worst} {errors[worst] / max(errors[best], 1e-9):.1f}x worse than "
        f"{best} (mean absolute error {errors[worst]:.3f} against {errors[best]:.3f} on held-out good images), "
        f"so one model will map {worst} poorly; train one model per product, or a larger preset"
    )


def latent_scale(run: StagedRun) -> float:
    return float(run.progress["autoencoder"]["latent_scale"])


def load_codec(run_dir, config, meta: dict) -> tuple[LatentEncoder, LatentDecoder]:
    """The trained autoencoder of a latent run (``meta``: its config.yaml) as encoder and decoder stages (CPU, eval)."""
    from .networks import run_network

    size = config.data.image_size
    ae = load_weights(
        run_dir, "autoencoder", build_autoencoder(run_network(meta, config), size, config.backbone.weights)
    )
    scale = float(meta["stages"]["autoencoder"]["latent_scale"])
    return LatentEncoder(ae.eval(), scale), LatentDecoder(ae.eval(), scale)
