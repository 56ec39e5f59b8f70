"""Synthetic anomalies (DiffusionAD paper §IV-D, eq. 12), batched in PyTorch on the training device.

    S = beta (M * N) + (1 - beta) (M * A) + (1 - M) * N

N is a normal image, M a binary mask from thresholded, rotated Perlin noise (optionally
restricted to the object's foreground), A an appearance source: a texture image or the normal
image itself, patch-shuffled ("self-augmentation"), then three random appearance augmentations
(DRAEM's set), and beta in [0.2, 0.8].

Everything runs on whole batches on the device that trains, so a GPU is never left waiting for
CPU workers: the synthesis of a batch of 8 at 256x256 is a few hundred small kernels and no
host synchronisation. All randomness comes from the ``torch.Generator`` passed in, so a seed
reproduces a batch on a given device. The object foreground of each training image is computed
once with ``foreground_mask`` (OpenCV) when the images are loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import DataError
from ..core.preprocess import Preprocess, resize
from ..data.io import list_images, read_image

MAX_PERLIN_RES = 32
"""Perlin lattice cells per axis are drawn from 1, 2, 4, ..., MAX_PERLIN_RES."""


# ------------------------------------------------------------------------------------ masks
def perlin_noise(
    batch: int, size: int, res_y: torch.Tensor, res_x: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """2-D gradient noise (Perlin 1985) in about [-1, 1]: [B, size, size], ``res_*`` cells per sample."""
    dev = res_y.device
    n = MAX_PERLIN_RES + 1
    angles = torch.rand(batch, n * n, generator=generator, device=dev) * (2.0 * math.pi)
    gx, gy = torch.cos(angles), torch.sin(angles)
    pos = torch.arange(size, device=dev, dtype=torch.float32)
    ys = pos[None] * res_y[:, None].float() / size  # [B, H]
    xs = pos[None] * res_x[:, None].float() / size  # [B, W]
    y0, x0 = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - y0)[:, :, None], (xs - x0)[:, None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        idx = ((y0 + dy)[:, :, None] * n + (x0 + dx)[:, None, :]).reshape(batch, -1)
        cx = torch.gather(gx, 1, idx).view(batch, size, size)
        cy = torch.gather(gy, 1, idx).view(batch, size, size)
        return cx * (fy - dy) + cy * (fx - dx)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    top = c00 + u * (c01 - c00)
    bottom = c10 + u * (c11 - c10)
    return math.sqrt(2.0) * (top + v * (bottom - top))


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each [B, C, H, W] image about its centre, reflecting at the border."""
    a = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def perlin_masks(
    batch: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
    foreground: torch.Tensor | None = None,
    tries: int = 4,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Irregular blob masks [B, 1, H, W] (0/1): Perlin noise at random scales, rotated, thresholded.

    ``tries`` candidates are drawn per sample and the first one that is not empty (inside the
    foreground, when given) is kept; no host synchronisation is needed for the choice.
    """
    n = batch * tries
    scales = torch.randint(0, int(math.log2(MAX_PERLIN_RES)) + 1, (2, n), generator=generator, device=device)
    res = 2**scales
    noise = perlin_noise(n, size, res[0], res[1], generator)
    degrees = torch.rand(n, generator=generator, device=device) * 180.0 - 90.0
    masks = (rotate(noise[:, None], degrees) > threshold).float().view(batch, tries, size, size)
    if foreground is not None:
        masks = masks * foreground.float()
    non_empty = masks.flatten(2).amax(-1) > 0  # [B, tries]
    first = non_empty.float().argmax(1)  # the first non-empty candidate (0 when none is)
    return masks[torch.arange(batch, device=device), first][:, None]


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Object foreground (float32 0/1) of one uint8 RGB image of an object on a plain background.

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


# ------------------------------------------------------ appearance augmentations, x in [0, 1]
def _per_sample(x: torch.Tensor, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(x.shape[0], 1, 1, 1, generator=g, device=x.device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with OpenCV's 8-bit kernel size and its default border (reflect 101)."""
    k = int(round(sigma * 3 * 2 + 1)) | 1
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    w = torch.exp(-(t * t) / (2 * sigma * sigma))
    w = w / w.sum()
    c = x.shape[1]
    x = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, arg = x.max(1)
    c = v - x.min(1).values
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(arg == 0, ((g - b) / safe) % 6, torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h)) % 1.0
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + h * 6) % 6
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _gamma(x, g):
    return x.clamp_min(0) ** _per_sample(x, 0.5, 2.0, g)


def _brightness(x, g):
    return (x * _per_sample(x, 0.8, 1.2, g) + _per_sample(x, -30 / 255, 30 / 255, g)).clamp(0, 1)


def _sharpen(x, g):
    a, b = _per_sample(x, 0.5, 1.5, g), _per_sample(x, 0.5, 1.5, g)
    return (x * (1 + a) - gaussian_blur(x, 2.0) * b).clamp(0, 1)


def _hue(x, g):
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0:1] + _per_sample(x, -50 / 180, 50 / 180, g)) % 1.0
    s = (hsv[:, 1:2] * _per_sample(x, 0.5, 1.5, g)).clamp(0, 1)
    return hsv_to_rgb(torch.cat([h, s, hsv[:, 2:3]], 1)).clamp(0, 1)


def _solarize(x, g):
    return torch.where(x >= 128 / 255, 1 - x, x)


def _posterize(x, g):
    bits = torch.randint(2, 5, (x.shape[0], 1, 1, 1), generator=g, device=x.device)
    q = (2 ** (8 - bits)).float()
    return torch.floor(x * 255 / q) * q / 255


def _invert(x, g):
    return 1 - x


def _equalize(x, g):
    """Per-channel histogram equalisation (OpenCV's equalizeHist formula)."""
    b, c, h, w = x.shape
    v = (x * 255).round().clamp(0, 255).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, h * w)).min(1, keepdim=True).values
    span = h * w - cdf_min  # 0 for a constant channel, which stays as it is
    lut = ((cdf - cdf_min).clamp_min(0).float() * 255 / span.clamp_min(1).float()).round()
    out = torch.gather(lut, 1, v).view(b, c, h, w) / 255
    return torch.where((span > 0).view(b, c, 1, 1), out, x)


def _rotate(x, g):
    return rotate(x, torch.rand(x.shape[0], generator=g, device=x.device) * 90.0 - 45.0)


AUGMENTATIONS = (_gamma, _brightness, _sharpen, _hue, _solarize, _posterize, _invert, _equalize, _rotate)


def augment(x: torch.Tensor, g: torch.Generator, n: int = 3) -> torch.Tensor:
    """``n`` distinct augmentations per sample, in a random order per sample."""
    order = torch.rand(x.shape[0], len(AUGMENTATIONS), generator=g, device=x.device).argsort(1)[:, :n]
    for r in range(n):
        out = x
        for j, op in enumerate(AUGMENTATIONS):
            out = torch.where((order[:, r] == j).view(-1, 1, 1, 1), op(x, g), out)
        x = out
    return x


def shuffle_patches(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Cut each image into a k x k grid and permute its tiles (self-shuffled patches)."""
    b, c, h, w = x.shape
    th, tw = h // k, w // k
    tiles = x.view(b, c, k, th, k, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, k * k, c, th, tw)
    perm = torch.rand(b, k * k, generator=g, device=x.device).argsort(1)
    tiles = torch.gather(tiles, 1, perm[:, :, None, None, None].expand_as(tiles))
    return tiles.view(b, k, k, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# ------------------------------------------------------------------------------ synthesizer
@dataclass
class AnomalySynthesizer:
    """Turns a batch of normal images into (anomalous images, masks) following eq. (12)."""

    size: int
    textures: torch.Tensor | None = None
    """uint8 [K, 3, size, size] appearance sources on the training device (None: self-augmentation)."""
    beta_range: tuple[float, float] = (0.2, 0.8)
    mask_tries: int = 4

    @classmethod
    def from_folder(
        cls,
        size: int,
        textures: str | Path | None,
        device: torch.device | str = "cpu",
    ) -> AnomalySynthesizer:
        if textures is None:
            return cls(size, None)
        folder = Path(textures)
        if not folder.is_dir():
            raise DataError(f"texture folder not found: {folder}")
        files = _all_images(folder)
        if not files:
            raise DataError(f"no texture images in {folder}")
        spec = Preprocess.for_size(size)
        stack = np.stack([resize(_center_square(read_image(p)), spec) for p in files])
        return cls(size, torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous().to(device))

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, foreground: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` float [B, 3, H, W] in [0, 1] -> (anomalous in [0, 1], mask [B, 1, H, W] 0/1)."""
        b, _, h, w = images.shape
        if (h, w) != (self.size, self.size):
            raise DataError(f"synthesis expects {self.size}x{self.size} images, got {h}x{w}")
        dev, g = images.device, generator
        mask = perlin_masks(b, self.size, g, dev, foreground, self.mask_tries)
        ks = [k for k in (2, 4, 8) if self.size % k == 0]
        pick = torch.randint(0, len(ks), (b, 1, 1, 1), generator=g, device=dev)
        source = images
        for i, k in enumerate(ks):
            source = torch.where(pick == i, shuffle_patches(images, k, g), source)
        if self.textures is not None:
            idx = torch.randint(0, self.textures.shape[0], (b,), generator=g, device=dev)
            use = torch.rand(b, 1, 1, 1, generator=g, device=dev) < 0.5
            source = torch.where(use, self.textures[idx].to(images.dtype) / 255.0, source)
        source = augment(source, g)
        beta = _per_sample(images, *self.beta_range, g)
        out = beta * (mask * images) + (1 - beta) * (mask * source) + (1 - mask) * images
        return out, mask


def _all_images(folder: Path) -> list[Path]:
    out: list[Path] = []
    for d in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        out.extend(list_images(d))
    return out


def _center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return img[y : y + s, x : x + s]
