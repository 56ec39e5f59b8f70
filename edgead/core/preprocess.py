"""The one pre-processing definition (timm's ``PretrainedCfg`` idea): declared, never guessed.

Training, calibration, parity checks and the runtime all turn a uint8 RGB image into a model
input through these functions with the same ``Preprocess`` (written into the bundle manifest),
so a 1280x720 camera frame reaches the graphs exactly as the training images reached the
networks: resized to the model size with the declared interpolation, scaled to [0, 1], then
(x - mean) / std, NCHW float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}
UNIT = np.float32(1.0 / 255.0)
"""uint8 -> [0, 1] is a multiplication by this float32 constant, in numpy and torch alike (bit-identical)."""


@dataclass
class Preprocess:
    image_size: list[int]
    """[height, width] of the model input."""
    mean: list[float]
    std: list[float]
    channel_order: Literal["RGB"] = "RGB"
    input_dtype: Literal["uint8"] = "uint8"
    interpolation: Literal["area", "linear"] = "area"

    @classmethod
    def for_size(cls, size: int) -> Preprocess:
        """edgead's graphs take RGB in [-1, 1]: mean = std = 0.5, OpenCV INTER_AREA resizing."""
        return cls(image_size=[size, size], mean=[0.5] * 3, std=[0.5] * 3)


def resize(rgb: np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 RGB HxWx3 at any size -> uint8 RGB at the model size (unchanged when it already is)."""
    h, w = spec.image_size
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=INTERPOLATION[spec.interpolation])


def normalise(x01: np.ndarray, spec: Preprocess, channel_axis: int = -1):
    """[0, 1] values -> (x - mean) / std; works on numpy arrays and torch tensors alike."""
    shape = [1] * x01.ndim
    shape[channel_axis] = 3
    mean = np.asarray(spec.mean, np.float32).reshape(shape)
    std = np.asarray(spec.std, np.float32).reshape(shape)
    if not isinstance(x01, np.ndarray):  # a torch tensor: same arithmetic on its device
        mean, std = x01.new_tensor(mean), x01.new_tensor(std)
    return (x01 - mean) / std


def to_input(rgb: np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 RGB HxWx3 -> float32 [3, H, W] as the graphs expect."""
    x = resize(rgb, spec).astype(np.float32) * UNIT
    return np.ascontiguousarray(normalise(x, spec).transpose(2, 0, 1))


def to_batch(images: list[np.ndarray], spec: Preprocess) -> np.ndarray:
    return np.stack([to_input(im, spec) for im in images])


def to_image(x: np.ndarray, spec: Preprocess) -> np.ndarray:
    """A model-space [3, H, W] array (e.g. a reconstruction) back to uint8 RGB HxWx3."""
    rgb = x.transpose(1, 2, 0) * np.asarray(spec.std) + np.asarray(spec.mean)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
