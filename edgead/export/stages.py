"""Stage contracts (names, dtypes, dynamic axes, sample inputs) and one wrapper module per stage.

The runtime never reads this file: the contract is written into the bundle manifest and each
graph's metadata_props at export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..bundle import TensorSpec


@dataclass(frozen=True)
class StageContract:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str

    def sample_inputs(self, batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random example inputs (batch >= 2: the dynamo exporter fixes a batch of 1)."""
        out = []
        for spec in self.inputs:
            shape = [batch if isinstance(d, str) else d for d in spec.shape]
            if spec.name == "t":
                out.append(torch.randint(0, 1000, shape, generator=generator).float())
            else:
                out.append(torch.randn(shape, generator=generator))
        return tuple(out)


def _img(name: str, size: int, channels: int = 3) -> TensorSpec:
    return TensorSpec(name, "float32", ["batch", channels, size, size])


def denoiser_step_contract(size: int) -> StageContract:
    return StageContract(
        "denoiser_step",
        (_img("x_t", size), TensorSpec("t", "float32", ["batch"])),
        (_img("eps", size),),
        "eps_theta(x_t, t): predicted noise; t is the timestep index as float32",
    )


def segmenter_contract(size: int) -> StageContract:
    return StageContract(
        "segmenter",
        (_img("image", size), _img("reconstruction", size)),
        (_img("mask", size, 1),),
        "anomaly probability per pixel from concat(image, reconstruction), both in [-1, 1]",
    )


def feature_extractor_contract(size: int, channels: int, stride: int) -> StageContract:
    return StageContract(
        "feature_extractor",
        (_img("image", size),),
        (TensorSpec("features", "float32", ["batch", channels, size // stride, size // stride]),),
        "patch features (ImageNet CNN, neighbourhood-averaged) at one stride",
    )


class DenoiserStep(nn.Module):
    """diffusers UNet2DModel as a pure (x_t, t) -> eps function."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t).sample
