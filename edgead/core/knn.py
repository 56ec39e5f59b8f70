"""Nearest-neighbour patch scoring in numpy: the PatchCore baseline and D3AD's kNN prior."""

from __future__ import annotations

import math

import cv2
import numpy as np


class NearestNeighbourScorer:
    """Distance of every patch descriptor to its nearest neighbour in a memory bank."""

    def __init__(self, bank: np.ndarray, chunk: int = 512, block: int = 2048):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty [N, C] array, got {bank.shape}")
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = (self.bank.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.neg2_bank_t = np.ascontiguousarray(-2.0 * self.bank.T)  # [C, N]: one product gives -2 q.b
        self.chunk, self.block = chunk, block

    exclude: np.ndarray | None = None
    """Rows of the bank to leave out (bool [N]): export scores a training image against the bank without the rows
    it contributed, as if it were unseen (cross-fitted calibration). None at run time."""

    def distances(self, features: np.ndarray) -> np.ndarray:
        """features [B, C, h, w] -> Euclidean nearest-neighbour distances [B, h, w]."""
        b, c, h, w = features.shape
        if c != self.bank.shape[1]:
            raise ValueError(f"features have {c} channels, the memory bank {self.bank.shape[1]}")
        q = features.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float32)
        out = np.empty(q.shape[0], np.float32)
        bank_sq = self.bank_sq if self.exclude is None else np.where(self.exclude, np.inf, self.bank_sq)
        n = self.bank.shape[0]
        # |q - b|^2 = |q|^2 + (|b|^2 - 2 q.b): the bracket's minimum over the bank in blocks small enough to stay in
        # the cache (the whole [patches, bank] matrix was 88 MB a frame for tire's 10% bank), |q|^2 added after it
        for i in range(0, q.shape[0], self.chunk):
            part = q[i : i + self.chunk]
            best = np.full(part.shape[0], np.inf, np.float32)
            for j in range(0, n, self.block):
                m = part @ self.neg2_bank_t[:, j : j + self.block]
                m += bank_sq[None, j : j + self.block]
                np.minimum(best, m.min(1), out=best)
            out[i : i + self.chunk] = np.sqrt(np.maximum(best + (part**2).sum(1), 0.0))
        return out.reshape(b, h, w)


def distance_map(scorer: NearestNeighbourScorer, features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Patch features [B, C, h, w] -> nearest-neighbour distance maps [B, H, W] at the image size (bilinear)."""
    h, w = size
    d = scorer.distances(features)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in d]).astype(np.float32)


def roundup(x: float, n: int = 10) -> int:
    """The reference code's rounding of a start step to the nearest multiple of n (half-way values round up)."""
    res = math.ceil(x / n) * n
    if 0 < x % n < n / 2:
        res -= n
    return int(res)


def adaptive_avg_pool(x: np.ndarray, size: int) -> np.ndarray:
    """[B, C, H, W] -> [B, C, size, size], PyTorch's adaptive_avg_pool2d windows (floor/ceil bounds)."""
    b, c, h, w = x.shape

    def bounds(n: int) -> list[tuple[int, int]]:
        return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

    out = np.empty((b, c, size, size), np.float32)
    for i, (y0, y1) in enumerate(bounds(h)):
        for j, (x0, x1) in enumerate(bounds(w)):
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


class KnnPrior:
    """D3AD's severity prior: an image's mean L1 distance to its k nearest training images, placed in the
    histogram of the training images' own distances, chooses how far the reconstruction starts.

        bin   = min(digitize(d, edges, right=True) - 1, bins - 1) + 1        (the reference's mapping)
        t_max = roundup(max(bin, 2) / bins * max_t)                          (20 ... 80 for max_t 80)
    """

    def __init__(self, bank: np.ndarray, edges: np.ndarray, k: int, max_t: int):
        if bank.ndim != 2 or len(bank) < k:
            raise ValueError(f"the prior's memory bank has shape {bank.shape}; it needs at least k = {k} rows")
        if edges.ndim != 1 or len(edges) < 3 or not np.all(np.diff(edges) >= 0):
            raise ValueError(f"the prior's bin edges must be an increasing vector, got shape {edges.shape}")
        self.bank = np.ascontiguousarray(bank, np.float32)
        self.edges = np.asarray(edges, np.float64)
        self.k, self.max_t = k, max_t
        self.bins = len(edges) - 1

    def distances(self, features: np.ndarray) -> np.ndarray:
        """[B, D] pooled features -> [B] mean L1 distance to the k nearest bank rows."""
        if features.ndim != 2 or features.shape[1] != self.bank.shape[1]:
            raise ValueError(f"prior features have shape {features.shape}, the bank {self.bank.shape}")
        out = np.empty(len(features), np.float64)
        for i, f in enumerate(features.astype(np.float32)):
            d = np.abs(self.bank - f).sum(axis=1, dtype=np.float64)
            out[i] = np.partition(d, self.k - 1)[: self.k].mean()
        return out

    def bin_of(self, distance: np.ndarray) -> np.ndarray:
        b = np.digitize(np.asarray(distance, np.float64), self.edges, right=True) - 1
        return np.minimum(b, self.bins - 1) + 1

    def t_max(self, distance: np.ndarray) -> np.ndarray:
        bins = self.bin_of(distance)
        return np.array([roundup(max(int(b), 2) / self.bins * self.max_t) for b in bins], np.int64)
