"""Images handed to the runtime -> uint8 RGB, by their declared type and channel order.

Images arrive as uint8 (HxW, HxWx3 or HxWx4) in a declared channel order; nothing is guessed
from pixel values, so a dark and a bright frame take the same path. The model input is then
made by ``edgead.core.preprocess`` (the definition training uses too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import DataError, InputError
from ..data.io import read_image, to_rgb_uint8

MIN_SIDE = 8
"""Smallest image height or width the runtime judges (a local Detector and a served model alike)."""


def check_judgeable(image: np.ndarray, what: str = "image") -> None:
    """InputError for an image too small to judge: one rule for predict, streams and the server."""
    if min(image.shape[:2]) < MIN_SIDE:
        raise InputError(
            f"{what} of shape {tuple(image.shape)} is too small: images of at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels are judged"
        )


def as_rgb(image: np.ndarray | str | Path, color: str = "bgr") -> np.ndarray:
    """A path or a uint8 array in ``color`` order -> contiguous uint8 RGB HxWx3."""
    if isinstance(image, (str, Path)):
        try:
            rgb = read_image(image)
        except DataError as exc:
            raise InputError(str(exc)) from None
        check_judgeable(rgb, f"image {image}")
        return rgb
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image path or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(
            f"expected a uint8 image array, got dtype {image.dtype} "
            "(convert with (x * 255).round().astype(np.uint8) if it holds values in [0, 1])"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(f"expected an image of shape HxW, HxWx3 or HxWx4, got {tuple(image.shape)}")
    check_judgeable(image)
    try:
        return to_rgb_uint8(image, "image", color)
    except DataError as exc:
        raise InputError(str(exc)) from None
