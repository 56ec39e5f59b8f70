"""Stage contracts: what each exported graph takes and returns (torch-free).

A method's exporter declares one ``StageContract`` per stage; the contract is written into the
bundle manifest and each graph's ``metadata_props`` at export, and the runtime, the engine
builder and the load-time checks read it from there, never from training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

StageName = Literal["encoder", "hint_encoder", "denoiser_step", "decoder", "feature_extractor", "segmenter"]
LATENT_FACTOR = 8
"""The latent methods' autoencoder halves the image three times: a 256x256 image is a 32x32 latent."""
LATENT_CHANNELS = 4

DType = Literal["float32", "float16", "int64", "int32", "uint8"]


@dataclass
class TensorSpec:
    name: str
    dtype: DType
    shape: list[int | str]
    """Dimensions; a string names a dynamic axis (e.g. "batch")."""


@dataclass(frozen=True)
class StageContract:
    name: StageName
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str
    batch_factor: int = 1
    """Graph samples per frame: an engine for frame batch B needs batch B * batch_factor."""


def image_spec(name: str, size: int | tuple[int, int], channels: int = 3) -> TensorSpec:
    h, w = (size, size) if isinstance(size, int) else size
    return TensorSpec(name, "float32", ["batch", channels, h, w])


def latent_size(image_size: int) -> int:
    return image_size // LATENT_FACTOR


def latent_noise(image_size: int, seed: int) -> np.ndarray:
    """A latent method's fixed start noise (the bundle extra ``noise``): the same seed gives the same
    array in training's model selection, at export and so at run time."""
    h = latent_size(image_size)
    return np.random.default_rng(seed).standard_normal((1, LATENT_CHANNELS, h, h)).astype(np.float32)
