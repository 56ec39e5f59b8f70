"""Image reading and writing with one convention: uint8 RGB, HxWx3.

Grayscale, 16-bit and RGBA files are converted explicitly (by their declared format, never by
guessing from pixel values); unreadable files raise DataError naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import DataError
from ..core.outputs import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS_ENV = "EDGEAD_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image decoded (8000x8000): a 20000x20000 PNG would take 1.2 GB before anyone noticed."""


def max_image_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        limit = int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {value!r}") from None
    if limit <= 0:
        raise DataError(f"{MAX_PIXELS_ENV} must be positive, got {limit}")
    return limit


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header, read before decoding; None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + length
    return None


def to_rgb_uint8(image: np.ndarray, source: str = "image", color: str = "bgr") -> np.ndarray:
    """Convert a decoded HxW, HxWx1, HxWx3 or HxWx4 array to contiguous uint8 RGB.

    ``color`` is the channel order of 3/4-channel input: "bgr" (OpenCV) or "rgb".
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be one of 'bgr', 'rgb'; got {color!r}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{source}: expected 8-bit or 16-bit pixels, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"{source}: expected an HxW, HxWx3 or HxWx4 image, got shape {tuple(image.shape)}")
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if color == "bgr" else cv2.COLOR_RGBA2RGB
    else:
        code = cv2.COLOR_BGR2RGB if color == "bgr" else None
    out = cv2.cvtColor(image, code) if code is not None else image
    return np.ascontiguousarray(out)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (HxWx3)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    limit = max_image_pixels()
    size = declared_size(data[:65536].tobytes())
    if size is not None and size[0] * size[1] > limit:
        raise DataError(
            f"image {p} is {size[0]}x{size[1]} pixels, more than the limit of {limit:,} "
            f"(set {MAX_PIXELS_ENV} to allow larger images)"
        )
    # A JPEG is decoded upright: its EXIF orientation tag applies (a phone or camera stores the sensor's rows and
    # says how to turn them; ignored, a good part photographed sideways is an anomaly). Other formats keep every
    # channel and bit as stored, converted below by their declared type.
    jpeg = data[:2].tobytes() == b"\xff\xd8"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR if jpeg else cv2.IMREAD_UNCHANGED) if data.size else None
    except (cv2.error, MemoryError) as exc:
        raise DataError(f"cannot decode image {p}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise DataError(f"cannot decode image {p} (corrupt or not an image file)")
    if image.shape[0] * image.shape[1] > limit:  # formats whose header is not read above (TIFF, WebP)
        raise DataError(
            f"image {p} is {image.shape[1]}x{image.shape[0]} pixels, more than the limit of "
            f"{limit:,} (set {MAX_PIXELS_ENV} to allow larger images)"
        )
    return to_rgb_uint8(image, str(p), color="bgr")


def read_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as bool HxW (any non-zero pixel is anomalous)."""
    p = Path(path)
    image = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) if p.is_file() else None
    if image is None:
        raise DataError(f"cannot read mask {p}")
    if size is not None and image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
    return image > 0


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Write uint8 RGB (or single-channel) to any format OpenCV knows, creating folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(p.suffix or ".png", bgr)
    if not ok:
        raise DataError(f"cannot encode image for {p}")
    atomic_write(p, buf.tobytes())  # a full disk leaves no truncated image behind


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``."""
    f = Path(folder)
    return sorted(p for p in f.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
