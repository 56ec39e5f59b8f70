"""Nearest-neighbour patch scoring in numpy: the PatchCore baseline and D3AD's kNN prior."""

from __future__ import annotations

import numpy as np


class NearestNeighbourScorer:
    """Distance of every patch descriptor to its nearest neighbour in a memory bank."""

    def __init__(self, bank: np.ndarray, chunk: int = 4096):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty [N, C] array, got {bank.shape}")
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = (self.bank.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.chunk = chunk

    def distances(self, features: np.ndarray) -> np.ndarray:
        """features [B, C, h, w] -> Euclidean nearest-neighbour distances [B, h, w]."""
        b, c, h, w = features.shape
        if c != self.bank.shape[1]:
            raise ValueError(f"features have {c} channels, the memory bank {self.bank.shape[1]}")
        q = features.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float32)
        out = np.empty(q.shape[0], np.float32)
        for i in range(0, q.shape[0], self.chunk):
            part = q[i:i + self.chunk]
            d2 = (part**2).sum(1, keepdims=True) - 2.0 * part @ self.bank.T + self.bank_sq[None]
            out[i:i + self.chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
        return out.reshape(b, h, w)
