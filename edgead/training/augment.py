"""Augmentation of the normal training images, batched on the training device (small sets).

Geometric: per-sample horizontal and vertical flips, and 90-degree rotations (square images); the
object foreground, when there is one, turns with its image. Photometric: per-sample brightness and
contrast. Only where the product allows it: a texture (grid) looks the same turned; an oriented
part does not, so both are options, off by default.
"""

from __future__ import annotations

import torch

GEOMETRIC = ("none", "flip", "flip_rotate")


def _where(pick: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(pick.view(-1, *([1] * (a.dim() - 1))), a, b)


def geometric(
    x: torch.Tensor, fg: torch.Tensor | None, mode: str, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, C, H, W] images (and [B, 1, H, W] foregrounds) flipped and turned at random, each sample its own way."""
    if mode == "none":
        return x, fg
    if mode not in GEOMETRIC:
        raise ValueError(f"augment must be one of {', '.join(map(repr, GEOMETRIC))}; got {mode!r}")
    b, dev = x.shape[0], x.device
    ops = [lambda t: t.flip(-1), lambda t: t.flip(-2)]
    if mode == "flip_rotate":
        ops.append(lambda t: t.rot90(1, dims=(-2, -1)))
    for op in ops:
        pick = torch.rand(b, generator=g, device=dev) < 0.5
        x = _where(pick, op(x), x)
        fg = None if fg is None else _where(pick, op(fg), fg)
    return x, fg


def photometric(x01: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] with contrast x (1 +- strength) about their mean and brightness +- strength / 2."""
    if strength <= 0:
        return x01
    b, dev = x01.shape[0], x01.device
    contrast = 1 + strength * (2 * torch.rand(b, 1, 1, 1, generator=g, device=dev) - 1)
    bright = 0.5 * strength * (2 * torch.rand(b, 1, 1, 1, generator=g, device=dev) - 1)
    mean = x01.mean(dim=(1, 2, 3), keepdim=True)
    return ((x01 - mean) * contrast + mean + bright).clamp(0, 1)
