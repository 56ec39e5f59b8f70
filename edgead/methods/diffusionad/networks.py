"""DiffusionAD's two sub-networks and their size presets.

The denoiser is a diffusers ``UNet2DModel`` predicting noise; the segmentation network is a
U-Net (encoder, decoder, skip connections; paper §IV-A) on concat(x0, x0_hat) -> sigmoid mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ...core.config import ModelConfig
from ...core.errors import ConfigError
from ...training.unet import build_unet


@dataclass(frozen=True)
class DiffusionADNetworkConfig:
    """Resolved network sizes: the constructor arguments of both sub-networks."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention_resolutions: tuple[int, ...]
    attention_head_dim: int
    norm_num_groups: int
    segmenter_channels: int
    segmenter_depth: int


PRESETS: dict[str, DiffusionADNetworkConfig] = {
    # unit tests: seconds per epoch on a CPU
    "tiny": DiffusionADNetworkConfig((16, 32, 32), 1, (), 8, 8, 8, 3),
    # edge default: 4.3 M parameter denoiser, attention only at 1/8 resolution
    "s": DiffusionADNetworkConfig((32, 64, 128, 128), 1, (32,), 32, 32, 32, 4),
    "m": DiffusionADNetworkConfig((64, 128, 256, 256), 2, (32,), 32, 32, 48, 5),
    # paper §V-A: base 128 channels, attention at 32, 16 and 8 (guided-diffusion 256 layout)
    "paper": DiffusionADNetworkConfig((128, 128, 256, 256, 512, 512), 2, (32, 16, 8), 64, 32, 64, 5),
}


def resolve_network(model: ModelConfig, image_size: int) -> DiffusionADNetworkConfig:
    """Preset values with the non-None fields of ``model`` laid on top, then checked."""
    cfg = PRESETS[model.preset]
    overrides = {
        k: getattr(model, k)
        for k in DiffusionADNetworkConfig.__dataclass_fields__
        if getattr(model, k, None) is not None
    }
    cfg = replace(cfg, **overrides)
    bad = [c for c in cfg.block_out_channels if c % cfg.norm_num_groups]
    if bad:
        raise ConfigError(
            f"model.block_out_channels {cfg.block_out_channels} must all be divisible by "
            f"model.norm_num_groups ({cfg.norm_num_groups})"
        )
    if cfg.segmenter_depth < 1 or cfg.segmenter_channels < 1 or cfg.layers_per_block < 1:
        raise ConfigError("model.segmenter_depth, segmenter_channels and layers_per_block must be >= 1")
    factor = max(2 ** (len(cfg.block_out_channels) - 1), 2**cfg.segmenter_depth)
    if image_size % factor:
        raise ConfigError(
            f"data.image_size {image_size} must be divisible by {factor} for this network "
            f"({len(cfg.block_out_channels)} denoiser levels, segmenter depth {cfg.segmenter_depth})"
        )
    return cfg


def build_denoiser(cfg: DiffusionADNetworkConfig, image_size: int):
    return build_unet(
        image_size,
        3,
        3,
        cfg.block_out_channels,
        cfg.layers_per_block,
        cfg.attention_resolutions,
        cfg.attention_head_dim,
        cfg.norm_num_groups,
    )


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentationUNet(nn.Module):
    """U-Net on concat(image, reconstruction) (6 channels) -> anomaly probability [B,1,H,W]."""

    def __init__(self, channels: int = 32, depth: int = 4, in_channels: int = 6):
        super().__init__()
        widths = [channels * min(2**i, 8) for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(_double_conv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.decoders = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def logits(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, reconstruction], dim=1)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for dec in self.decoders:
            x = dec(torch.cat([self.up(x), skips.pop()], dim=1))
        return self.head(x)

    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(image, reconstruction))


def build_segmenter(cfg: DiffusionADNetworkConfig) -> SegmentationUNet:
    return SegmentationUNet(cfg.segmenter_channels, cfg.segmenter_depth)
