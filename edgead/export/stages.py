"""Stage wrappers (one small ``nn.Module`` per stage, no monkeypatching) and the generic contracts.

The runtime never reads this file: contracts are written into the bundle manifest and each
graph's metadata_props at export.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.contracts import (
    LATENT_CHANNELS,
    StageContract,
    TensorSpec,
    image_spec,
    latent_size,
)


def denoiser_step_contract(
    size: int | tuple[int, int], channels: int = 3, batch_factor: int = 1, description: str = ""
) -> StageContract:
    return StageContract(
        "denoiser_step",
        (image_spec("x_t", size, channels), TensorSpec("t", "float32", ["batch"])),
        (image_spec("eps", size, channels),),
        description or "eps_theta(x_t, t): predicted noise; t is the timestep index as float32, one per sample",
        batch_factor,
    )


def feature_extractor_contract(size: int, channels: int, stride: int) -> StageContract:
    return StageContract(
        "feature_extractor",
        (image_spec("image", size),),
        (TensorSpec("features", "float32", ["batch", channels, size // stride, size // stride]),),
        "patch features (ImageNet CNN, neighbourhood-averaged) at one stride",
    )


def latent_contracts(size: int) -> tuple[StageContract, StageContract]:
    h = latent_size(size)
    encoder = StageContract(
        "encoder",
        (image_spec("image", size),),
        (image_spec("latent", h, LATENT_CHANNELS),),
        "scaled posterior mean of the KL autoencoder",
    )
    decoder = StageContract(
        "decoder",
        (image_spec("latent", h, LATENT_CHANNELS),),
        (image_spec("image", size),),
        "image in [-1, 1] decoded from a scaled latent",
    )
    return encoder, decoder


def features_contract(
    size: int, stages: tuple[int, ...], description: str, batch_factor: int = 1, patches: tuple[int, ...] = ()
) -> StageContract:
    """EfficientNet-Lite0 feature maps at the chosen scales (0: stride 4, 1: stride 8, 2: stride 16), and
    with ``patches`` the patch descriptors of those scales (``FeatureStages``) as a last output."""
    from ..training.backbone import FEATURE_CHANNELS, FEATURE_STRIDES

    outputs = tuple(
        TensorSpec(
            f"features{FEATURE_STRIDES[i]}",
            "float32",
            ["batch", FEATURE_CHANNELS[i], size // FEATURE_STRIDES[i], size // FEATURE_STRIDES[i]],
        )
        for i in stages
    )
    if patches:
        grid = size // FEATURE_STRIDES[patches[0]]
        outputs += (TensorSpec("patches", "float32", ["batch", sum(FEATURE_CHANNELS[i] for i in patches), grid, grid]),)
    return StageContract("feature_extractor", (image_spec("image", size),), outputs, description, batch_factor)


class DenoiserStep(nn.Module):
    """diffusers UNet2DModel as a pure (x_t, t) -> eps function."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t).sample
