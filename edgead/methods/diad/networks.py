"""DiAD's Semantic-Guided (SG) network and the latent UNet it steers (He et al., 2024; reference: sgn/sgn.py).

    hint      C(x0): diffusers' ControlNetConditioningEmbedding 3 -> 16 -> 16 -> 32 (s2) -> 32 -> 96 (s2)
              -> 96 -> 256 (s2) -> zero conv to the UNet's first width: the image on the latent grid
    SG        a trainable copy of the UNet's time embedding, conv_in, down blocks and middle block
              (initialised from the trained UNet); its input is conv_in(z_t) + C(x0)
    outputs   a zero-initialised 1x1 conv on every skip connection and on the middle output
    SFF       each output k of the deepest level: out_k = SiLU(out_k + sum_j down_kj(prev_j)), prev_j the
              previous level's outputs, down = 3x3 stride-2 conv (no bias) -> InstanceNorm -> SiLU
    injection only_mid_control: the middle output is added to the UNet's middle block, the deepest-level
              outputs to the UNet decoder's skip connections at that level only

Departure from the reference (README.md beside this file): its SFF convolutions are zero-initialised and their
inputs come from zero-initialised convolutions whose only path to the loss is SFF itself, so no
gradient ever reaches either and SFF stays zero. Here SFF's convolutions keep PyTorch's default
initialisation: at the start the block still outputs zero (its inputs are zero), and it learns.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

HINT_WIDTHS = (16, 32, 96, 256)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _time_embedding(unet: nn.Module, timesteps: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    t = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
    return unet.time_embedding(unet.time_proj(t).to(dtype=sample.dtype))


def unet_forward(
    unet: nn.Module,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    mid_residual: torch.Tensor | None = None,
    deep_residuals: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """diffusers UNet2DModel.forward (no class labels, no skip_conv blocks) with ControlNet-style residuals."""
    emb = _time_embedding(unet, timesteps, sample)
    sample = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks:
        sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if deep_residuals is not None:
        g = len(deep_residuals)
        skips = skips[:-g] + tuple(s + r for s, r in zip(skips[-g:], deep_residuals))
    if unet.mid_block is not None:
        sample = unet.mid_block(sample, emb)
    if mid_residual is not None:
        sample = sample + mid_residual
    for block in unet.up_blocks:
        res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        sample = block(sample, res, emb)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))


class SemanticGuidedNetwork(nn.Module):
    def __init__(self, unet: nn.Module, sff: bool = True):
        super().__init__()
        from diffusers.models.controlnets.controlnet import (
            ControlNetConditioningEmbedding,
        )

        widths = list(unet.config.block_out_channels)
        self.time_proj = copy.deepcopy(unet.time_proj)
        self.time_embedding = copy.deepcopy(unet.time_embedding)
        self.conv_in = copy.deepcopy(unet.conv_in)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.hint = ControlNetConditioningEmbedding(widths[0], 3, HINT_WIDTHS)  # its conv_out starts at zero
        layers = unet.config.layers_per_block
        channels = [widths[0]]
        for i, w in enumerate(widths):
            channels += [w] * layers + ([w] if i < len(widths) - 1 else [])
        self.zero_convs = nn.ModuleList(zero_module(nn.Conv2d(c, c, 1)) for c in channels)
        self.mid_out = zero_module(nn.Conv2d(widths[-1], widths[-1], 1))
        self.group = layers + 1  # skip connections per decoder level
        deep, prev = channels[-self.group :], channels[-2 * self.group : -self.group]
        self.sff = (
            nn.ModuleList(
                nn.ModuleList(
                    nn.Sequential(
                        nn.Conv2d(cp, cd, 3, stride=2, padding=1, bias=False), nn.InstanceNorm2d(cd), nn.SiLU()
                    )
                    for cp in prev
                )
                for cd in deep
            )
            if sff and len(widths) > 1
            else None
        )
        self.silu = nn.SiLU()

    def forward(
        self, x_t: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(middle residual, deepest-level residuals); ``hint`` is C(x0) (the hint_encoder stage)."""
        emb = _time_embedding(self, timesteps, x_t)
        h = self.conv_in(x_t) + hint
        outs = [h]
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            outs += list(res)
        outs = [zc(o) for zc, o in zip(self.zero_convs, outs)]
        deep, prev = outs[-self.group :], outs[-2 * self.group : -self.group]
        if self.sff is not None:
            deep = [self.silu(d + sum(down(p) for down, p in zip(row, prev))) for d, row in zip(deep, self.sff)]
        mid = self.mid_out(self.mid_block(h, emb))
        return mid, deep


class GuidedDenoiser(nn.Module):
    """eps(z_t, t, C(x0)): the latent UNet steered by the SG network (the ``denoiser_step`` stage).

    Without an SG network it is the plain latent UNet (the ablation); the hint is then unused but kept
    as an input so that both variants share one stage contract.
    """

    def __init__(self, unet: nn.Module, sg: SemanticGuidedNetwork | None):
        super().__init__()
        self.unet, self.sg = unet, sg

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        if self.sg is None:
            return unet_forward(self.unet, x_t, t) + 0.0 * hint.mean()
        mid, deep = self.sg(x_t, hint, t)
        return unet_forward(self.unet, x_t, t, mid, deep)


class HintEncoder(nn.Module):
    """image in [-1, 1] -> C(x0) on the latent grid (the ``hint_encoder`` stage, once per image)."""

    def __init__(self, sg: SemanticGuidedNetwork):
        super().__init__()
        self.embedding = sg.hint

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.embedding(image)


def freeze_encoder(unet: nn.Module) -> list[nn.Parameter]:
    """Stage B: the UNet's time embedding, conv_in, down blocks and middle block frozen; returns the
    parameters that train (its decoder)."""
    for module in (unet.time_embedding, unet.conv_in, unet.down_blocks, unet.mid_block):
        if module is not None:
            module.requires_grad_(False)
    trainable = [unet.up_blocks, unet.conv_norm_out, unet.conv_out]
    return [p for m in trainable for p in m.parameters()]
