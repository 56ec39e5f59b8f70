"""Synthetic anomalies for training DiffusionAD's segmentation network (paper §IV-D, eq. 12).

    S = beta (M * N) + (1 - beta) (M * A) + (1 - M) * N

N is a normal image, M a binary mask from thresholded, rotated Perlin noise (optionally
restricted to the object's foreground), A an appearance source: a texture image or the normal
image itself, augmented and patch-shuffled ("self-augmentation"), and beta in [0.2, 0.8].
All randomness comes from the ``numpy.random.Generator`` passed in, so a seed reproduces a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from .io import list_images, read_image, resize


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise (Perlin 1985) in about [-1, 1] with ``res`` lattice cells per axis."""
    h, w = shape
    ry, rx = res
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys = np.arange(h) * (ry / h)
    xs = np.arange(w) * (rx / w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(y0 + dy)[:, None], (x0 + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return np.sqrt(2.0) * (top + v * (bottom - top))


def perlin_mask(size: int, rng: np.random.Generator, threshold: float = 0.5, max_scale: int = 6) -> np.ndarray:
    """Irregular blob mask (float32 0/1): Perlin noise at random scales, rotated, thresholded."""
    sy, sx = 2 ** rng.integers(0, max_scale, size=2)
    noise = perlin_noise((size, size), (int(sy), int(sx)), rng)
    angle = float(rng.uniform(-90, 90))
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    noise = cv2.warpAffine(noise.astype(np.float32), rot, (size, size), borderMode=cv2.BORDER_REFLECT)
    return (noise > threshold).astype(np.float32)


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Object foreground (float32 0/1) for objects on a plain background.

    Two cues: colour distance from the median border colour (bright or coloured objects) and
    local contrast (textured objects, e.g. a dark tyre on a dark cloth). A pixel is object when
    a cue lies 4 standard deviations above its mean on the image border; the mask is then
    closed, opened and its holes are filled.
    """
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    dist = np.linalg.norm(img - np.median(border, axis=0), axis=-1)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sigma = max(2.0, image.shape[0] / 64)
    mean = cv2.GaussianBlur(gray, (0, 0), sigma)
    contrast = np.sqrt(np.maximum(cv2.GaussianBlur(gray * gray, (0, 0), sigma) - mean * mean, 0))
    # a pixel is object when either cue is far outside what the image border shows
    w = max(2, image.shape[0] // 32)
    ring = np.ones(gray.shape, bool)
    ring[w:-w, w:-w] = False
    fg = np.zeros(gray.shape, bool)
    for c in (dist, contrast):
        fg |= c > c[ring].mean() + 4.0 * c[ring].std() + 1e-3
    fg = fg.astype(np.uint8) * 255
    k = max(3, image.shape[0] // 24) | 1
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    # fill holes: background is what a flood from the border reaches
    flood = fg.copy()
    pad = np.zeros((fg.shape[0] + 2, fg.shape[1] + 2), np.uint8)
    for y, x in ((0, 0), (0, fg.shape[1] - 1), (fg.shape[0] - 1, 0), (fg.shape[0] - 1, fg.shape[1] - 1)):
        if flood[y, x] == 0:
            cv2.floodFill(flood, pad, (x, y), 128)
    return (flood != 128).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# appearance augmentations (uint8 RGB -> uint8 RGB), in the spirit of DRAEM's imgaug set


def _gamma(img, rng):
    g = rng.uniform(0.5, 2.0)
    return (255.0 * (img / 255.0) ** g).astype(np.uint8)


def _brightness(img, rng):
    return np.clip(img * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255).astype(np.uint8)


def _sharpen(img, rng):
    blur = cv2.GaussianBlur(img, (0, 0), 2.0)
    return cv2.addWeighted(img, 1.0 + rng.uniform(0.5, 1.5), blur, -rng.uniform(0.5, 1.5), 0)


def _hue(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-50, 50))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _solarize(img, rng):
    return np.where(img >= 128, 255 - img, img).astype(np.uint8)


def _posterize(img, rng):
    bits = int(rng.integers(2, 5))
    return (img >> (8 - bits) << (8 - bits)).astype(np.uint8)


def _invert(img, rng):
    return (255 - img).astype(np.uint8)


def _equalize(img, rng):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], -1)


def _rotate(img, rng):
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-45, 45)), 1.0)
    return cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REFLECT)


AUGMENTATIONS = (_gamma, _brightness, _sharpen, _hue, _solarize, _posterize, _invert, _equalize, _rotate)


def augment(img: np.ndarray, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    for i in rng.choice(len(AUGMENTATIONS), size=n, replace=False):
        img = AUGMENTATIONS[i](img, rng)
    return np.ascontiguousarray(img)


def shuffle_patches(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut the image into a k x k grid and permute the tiles (self-shuffled patches)."""
    size = img.shape[0]
    k = int(rng.choice([d for d in (2, 4, 8) if size % d == 0]))
    t = size // k
    tiles = [img[i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(k) for j in range(k)]
    order = rng.permutation(len(tiles))
    rows = [np.concatenate([tiles[order[i * k + j]] for j in range(k)], axis=1) for i in range(k)]
    return np.concatenate(rows, axis=0)


@dataclass
class AnomalySynthesizer:
    """Turns a normal uint8 RGB image into (anomalous image, mask) following eq. (12)."""

    size: int
    textures: list[np.ndarray]
    foreground: bool = False
    beta_range: tuple[float, float] = (0.2, 0.8)
    max_tries: int = 8

    @classmethod
    def from_folder(cls, size: int, textures: str | Path | None, foreground: bool = False) -> AnomalySynthesizer:
        images: list[np.ndarray] = []
        if textures is not None:
            folder = Path(textures)
            if not folder.is_dir():
                raise DataError(f"texture folder not found: {folder}")
            files = _all_images(folder)
            if not files:
                raise DataError(f"no texture images in {folder}")
            images = [resize(_center_square(read_image(p)), size) for p in files]
        return cls(size, images, foreground)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        fg = foreground_mask(image) if self.foreground else None
        mask = np.zeros((self.size, self.size), np.float32)
        for _ in range(self.max_tries):
            mask = perlin_mask(self.size, rng)
            if fg is not None:
                mask = mask * fg
            if mask.any():
                break
        if self.textures and rng.random() < 0.5:
            source = self.textures[int(rng.integers(len(self.textures)))]
        else:
            source = shuffle_patches(image, rng)
        source = augment(source, rng)
        beta = float(rng.uniform(*self.beta_range))
        m = mask[..., None]
        n = image.astype(np.float32)
        out = beta * (m * n) + (1.0 - beta) * (m * source.astype(np.float32)) + (1.0 - m) * n
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask


def _all_images(folder: Path) -> list[Path]:
    out: list[Path] = []
    for d in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        out.extend(list_images(d))
    return out


def _center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return img[y:y + s, x:x + s]
