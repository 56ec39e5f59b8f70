"""Network sizes of the latent methods: a KL autoencoder (x8, 4 latent channels) and a latent UNet.

The `s` preset is the one sized for a 2-core CPU: all stages of D3AD train in about 30 minutes
(measured: a 1.2 M-parameter autoencoder step on eight 128-px crops 1.7 s, a 2.5 M-parameter
latent UNet step at batch 32 0.7 s). `paper` follows the reference code (SD's kl-f8 widths, a
guided-diffusion UNet of base 192 with mults 1,2,2,4,4 and attention at 32/16/8/4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...core.codec import from_dict
from ...core.config import ExperimentConfig, ModelConfig
from ...core.contracts import LATENT_CHANNELS, LATENT_FACTOR
from ...core.errors import ConfigError
from ...core.methods import get_method
from ..unet import build_unet
from .encoders import ENCODERS, ColourSkipDecoder, HalfResolutionDecoder, PretrainedLatentEncoder


@dataclass(frozen=True)
class LatentNetworkConfig:
    autoencoder_channels: tuple[int, ...]
    autoencoder_layers: int
    block_out_channels: tuple[int, ...]
    """Latent UNet widths per level."""
    layers_per_block: int
    attention_resolutions: tuple[int, ...]
    """Latent-grid sizes with self-attention."""
    attention_head_dim: int
    norm_num_groups: int
    autoencoder_encoder: str = "efficientnet-lite0"
    """efficientnet-lite0: ImageNet features, frozen, and a trained head (edgead/training/latent/encoders.py);
    scratch: diffusers' encoder trained on the product (edgead 0.2)."""
    autoencoder_colour_skip: bool = True
    """A linear path from the latent to the image beside the decoder (encoders.ColourSkipDecoder)."""
    autoencoder_decoder_stride: int = 1
    """2: the decoder's finest level dropped, its half-size image up-sampled x2 (encoders.HalfResolutionDecoder)."""


PRESETS: dict[str, LatentNetworkConfig] = {
    "tiny": LatentNetworkConfig((8, 16, 16, 16), 1, (16, 32), 1, (), 8, 8),
    "s": LatentNetworkConfig((32, 64, 64, 64), 1, (32, 64, 128), 1, (), 32, 32),
    "m": LatentNetworkConfig((64, 128, 256, 256), 2, (128, 256, 256, 256), 2, (16, 8), 32, 32),
    "paper": LatentNetworkConfig((128, 256, 512, 512), 2, (192, 384, 384, 768, 768), 2, (32, 16, 8, 4), 64, 32),
}


def run_network(meta: dict, config: ExperimentConfig) -> LatentNetworkConfig:
    """The network a latent run was trained with, as its config.yaml records it (runs of edgead 0.3 recorded
    none: resolved from their configuration, which the presets of 0.3 and later give alike)."""
    if meta.get("network"):
        return from_dict(LatentNetworkConfig, meta["network"], "network")
    return resolve_latent_network(config.model, config.data.image_size, config.method)


def resolve_latent_network(model: ModelConfig, image_size: int, method: str) -> LatentNetworkConfig:
    cfg = PRESETS[model.preset]
    overrides = {
        k: getattr(model, k) for k in LatentNetworkConfig.__dataclass_fields__ if getattr(model, k, None) is not None
    }
    if model.autoencoder_decoder_stride is None and model.preset in get_method(method).half_resolution_decoder:
        overrides["autoencoder_decoder_stride"] = 2
    cfg = replace(cfg, **overrides)
    if len(cfg.autoencoder_channels) != 4:
        raise ConfigError(
            f"model.autoencoder_channels needs 4 levels (x8 down-sampling), got {cfg.autoencoder_channels}"
        )
    for name in ("autoencoder_channels", "block_out_channels"):
        bad = [c for c in getattr(cfg, name) if c % cfg.norm_num_groups]
        if bad:
            raise ConfigError(
                f"model.{name} {getattr(cfg, name)} must all be divisible by "
                f"model.norm_num_groups ({cfg.norm_num_groups})"
            )
    if cfg.autoencoder_decoder_stride not in (1, 2):
        raise ConfigError(f"model.autoencoder_decoder_stride must be 1 or 2, got {cfg.autoencoder_decoder_stride}")
    if cfg.autoencoder_encoder not in ENCODERS:
        raise ConfigError(
            f"model.autoencoder_encoder must be one of {', '.join(map(repr, ENCODERS))}; "
            f"got {cfg.autoencoder_encoder!r}"
        )
    latent = image_size // LATENT_FACTOR
    if latent % 2 ** (len(cfg.block_out_channels) - 1):
        raise ConfigError(
            f"data.image_size {image_size} gives a {latent}x{latent} latent grid, which "
            f"{len(cfg.block_out_channels)} UNet levels cannot halve evenly"
        )
    return cfg


def build_autoencoder(cfg: LatentNetworkConfig, image_size: int, backbone_weights=None):
    """diffusers' AutoencoderKL; with ``autoencoder_encoder="efficientnet-lite0"`` its encoder is the
    pretrained one (the quant conv, the posterior and the decoder stay diffusers')."""
    from diffusers import AutoencoderKL

    n = len(cfg.autoencoder_channels)
    attention = (image_size // LATENT_FACTOR) in cfg.attention_resolutions  # self-attention in the middle blocks
    ae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.autoencoder_channels,
        layers_per_block=cfg.autoencoder_layers,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=image_size,
        mid_block_add_attention=attention,
    )
    if cfg.autoencoder_encoder == "efficientnet-lite0":
        ae.encoder = PretrainedLatentEncoder(
            LATENT_CHANNELS, cfg.autoencoder_channels[-1], cfg.norm_num_groups, backbone_weights
        )
    if cfg.autoencoder_decoder_stride == 2:
        ae.decoder = HalfResolutionDecoder(
            cfg.autoencoder_channels[1:], cfg.autoencoder_layers, cfg.norm_num_groups, mid_block_add_attention=attention
        )
    if cfg.autoencoder_colour_skip:
        ae.decoder = ColourSkipDecoder(ae.decoder, LATENT_CHANNELS, LATENT_FACTOR)
    return ae


def build_latent_unet(cfg: LatentNetworkConfig, image_size: int, in_channels: int = LATENT_CHANNELS):
    return build_unet(
        image_size // LATENT_FACTOR,
        in_channels,
        LATENT_CHANNELS,
        cfg.block_out_channels,
        cfg.layers_per_block,
        cfg.attention_resolutions,
        cfg.attention_head_dim,
        cfg.norm_num_groups,
    )


def training_defaults(preset: str) -> dict:
    """Step counts and batch sizes of the latent stages per preset (train.* and method fields override)."""
    table = {
        "tiny": dict(
            autoencoder_steps=30,
            autoencoder_batch=4,
            autoencoder_crop=64,
            denoiser_steps=30,
            denoiser_batch=8,
            denoiser_lr=1e-3,
            adapt_batch=4,
            guidance_steps=30,
        ),
        # the CPU preset (the training page gives its time on 2 cores)
        "s": dict(
            autoencoder_steps=450,
            autoencoder_batch=8,
            autoencoder_crop=128,
            denoiser_steps=1000,
            denoiser_batch=32,
            denoiser_lr=2e-4,
            adapt_batch=8,
            guidance_steps=600,
        ),
        "m": dict(
            autoencoder_steps=20000,
            autoencoder_batch=16,
            autoencoder_crop=256,
            denoiser_steps=30000,
            denoiser_batch=32,
            denoiser_lr=1e-4,
            adapt_batch=16,
            guidance_steps=30000,
        ),
        "paper": dict(
            autoencoder_steps=50000,
            autoencoder_batch=8,
            autoencoder_crop=256,
            denoiser_steps=60000,
            denoiser_batch=30,
            denoiser_lr=1e-4,
            adapt_batch=30,
            guidance_steps=60000,
        ),
    }
    return table[preset]
