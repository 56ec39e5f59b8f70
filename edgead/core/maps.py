"""Distance maps in numpy: per-pixel cosine distance of feature maps and align-corners upsampling.

The reference implementations of D3AD and DiAD upsample with ``F.interpolate(..., mode="bilinear",
align_corners=True)``; OpenCV's resize uses half-pixel centres instead, so this module does the
align-corners version exactly (two small interpolation matrices per size pair).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of linear interpolation with the corner samples aligned."""
    m = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        m[:, 0] = 1.0
        return m
    pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[B, h, w] -> [B, H, W] bilinear with align_corners=True."""
    h, w = maps.shape[-2:]
    rows, cols = _interpolation_matrix(h, size[0]), _interpolation_matrix(w, size[1])
    return np.einsum("Hh,bhw,Ww->bHW", rows, maps.astype(np.float32), cols, optimize=True).astype(np.float32)


def cosine_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """1 - cosine similarity over channels: [B, C, h, w] x 2 -> [B, h, w] (PyTorch's eps convention)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dot = (a64 * b64).sum(1)
    na = np.sqrt((a64 * a64).sum(1))
    nb = np.sqrt((b64 * b64).sum(1))
    return (1.0 - dot / np.maximum(na * nb, eps)).astype(np.float32)


def feature_distance_map(feats: list[np.ndarray], feats_hat: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """sum over scales of upsample(1 - cos(f, f_hat)): D3AD's feature map and DiAD's anomaly map."""
    return sum(upsample(cosine_distance(a, b), size) for a, b in zip(feats, feats_hat))
