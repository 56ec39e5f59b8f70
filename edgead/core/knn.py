"""Nearest-neighbour patch scoring in numpy: the PatchCore baseline and D3AD's kNN prior."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .bundle import Bundle
from .errors import BundleError, ConfigError

EXACT_BELOW = 8192
"""Banks with fewer rows are searched exactly, which is already fast; larger ones by cells (studies §17 has the
figures)."""
PROBES = 8
"""Cells each patch is compared with; the bank is split into about sqrt(rows) / 2 cells."""


class NearestNeighbourScorer:
    """Distance of every patch descriptor to its nearest neighbour in a memory bank.

    Exact by default. With ``cells`` (k-means centroids [K, C] and each bank row's cell, fitted at export by
    ``fit_cells``) the search is approximate, as an inverted-file index does it: each patch is compared with the
    rows of its ``probes`` nearest cells only. A distance found that way is never below the exact one; where the
    true neighbour lies in a cell not probed it is the nearest row of the cells that were."""

    def __init__(
        self,
        bank: np.ndarray,
        chunk: int = 512,
        block: int = 2048,
        cells: tuple[np.ndarray, np.ndarray] | None = None,
        probes: int = 8,
    ):
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty [N, C] array, got {bank.shape}")
        self.order = None  # bank rows in cell order (the search's layout) -> the bank's own rows
        if cells is not None:
            centroids, assignment = cells
            if centroids.ndim != 2 or centroids.shape[1] != bank.shape[1] or assignment.shape != (bank.shape[0],):
                raise ValueError(
                    f"the bank's cells do not fit it: centroids {centroids.shape}, assignment {assignment.shape}, "
                    f"bank {bank.shape}"
                )
            if not 1 <= probes <= len(centroids) or assignment.min() < 0 or assignment.max() >= len(centroids):
                raise ValueError(f"probes must be in 1..{len(centroids)} and each row's cell a centroid's index")
            self.order = np.argsort(assignment, kind="stable")
            self.starts = np.searchsorted(assignment[self.order], np.arange(len(centroids) + 1))
            self.centroids = np.ascontiguousarray(centroids, np.float32)
            self.neg2_centroids_t = np.ascontiguousarray(-2.0 * self.centroids.T)
            self.centroids_sq = (self.centroids.astype(np.float64) ** 2).sum(1).astype(np.float32)
            bank = bank[self.order]
        self.probes = probes
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = (self.bank.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.neg2_bank_t = np.ascontiguousarray(-2.0 * self.bank.T)  # [C, N]: one product gives -2 q.b
        self.chunk, self.block = chunk, block

    exclude: np.ndarray | None = None
    """Rows of the bank to leave out (bool [N], the bank's own row order): export scores a training image against
    the bank without the rows it contributed, as if it were unseen (cross-fitted calibration). None at run time."""

    def distances(self, features: np.ndarray) -> np.ndarray:
        """features [B, C, h, w] -> Euclidean nearest-neighbour distances [B, h, w]."""
        b, c, h, w = features.shape
        if c != self.bank.shape[1]:
            raise ValueError(f"features have {c} channels, the memory bank {self.bank.shape[1]}")
        q = features.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float32)
        bank_sq = self.bank_sq
        if self.exclude is not None:
            bank_sq = np.where(self.exclude if self.order is None else self.exclude[self.order], np.inf, bank_sq)
        best = self._exact(q, bank_sq) if self.order is None else self._probed(q, bank_sq)
        return np.sqrt(np.maximum(best + (q**2).sum(1), 0.0)).reshape(b, h, w)

    def _exact(self, q: np.ndarray, bank_sq: np.ndarray) -> np.ndarray:
        """min over the bank of |b|^2 - 2 q.b per query, in blocks small enough to stay in the cache (the whole
        [patches, bank] matrix was 88 MB a frame for tire's 10% bank)."""
        out = np.empty(q.shape[0], np.float32)
        n = self.bank.shape[0]
        for i in range(0, q.shape[0], self.chunk):
            part = q[i : i + self.chunk]
            best = np.full(part.shape[0], np.inf, np.float32)
            for j in range(0, n, self.block):
                m = part @ self.neg2_bank_t[:, j : j + self.block]
                m += bank_sq[None, j : j + self.block]
                np.minimum(best, m.min(1), out=best)
            out[i : i + self.chunk] = best
        return out

    def _probed(self, q: np.ndarray, bank_sq: np.ndarray) -> np.ndarray:
        """The same minimum over the rows of each query's nearest cells: the (query, cell) pairs sorted by cell,
        one product per cell with the queries that probe it."""
        k = len(self.centroids)
        to_cells = q @ self.neg2_centroids_t + self.centroids_sq[None]
        probed = np.argpartition(to_cells, self.probes - 1, axis=1)[:, : self.probes] if self.probes < k else None
        cell = np.tile(np.arange(k), q.shape[0]) if probed is None else probed.ravel()
        query = np.repeat(np.arange(q.shape[0]), self.probes)
        by_cell = np.argsort(cell, kind="stable")
        query, bounds = query[by_cell], np.searchsorted(cell[by_cell], np.arange(k + 1))
        best = np.full(q.shape[0], np.inf, np.float32)
        for c in range(k):
            a, z, r0, r1 = bounds[c], bounds[c + 1], self.starts[c], self.starts[c + 1]
            if a == z or r0 == r1:
                continue
            who = query[a:z]  # each query probes a cell once: no repeated index below
            m = q[who] @ self.neg2_bank_t[:, r0:r1]
            m += bank_sq[None, r0:r1]
            best[who] = np.minimum(best[who], m.min(1))
        lost = ~np.isfinite(best)  # every row of the probed cells left out: search the whole bank
        if lost.any():
            best[lost] = self._exact(q[lost], bank_sq)
        return best


def fit_cells(bank: np.ndarray, cells: int, iterations: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the bank's rows (Lloyd from seeded rows; run at export): centroids [cells, C] and each row's
    nearest centroid [N]. A cell left empty keeps its centroid (the search skips it)."""
    x = np.ascontiguousarray(bank, np.float32)
    cells = min(cells, len(x))
    centroids = x[np.random.default_rng(seed).choice(len(x), cells, replace=False)].copy()

    def nearest(c: np.ndarray) -> np.ndarray:
        return (x @ (-2.0 * c.T) + (c.astype(np.float64) ** 2).sum(1)[None]).argmin(1)

    for _ in range(iterations):
        assignment = nearest(centroids)
        counts = np.bincount(assignment, minlength=cells)
        sums = np.stack([np.bincount(assignment, x[:, j], cells) for j in range(x.shape[1])], 1)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centroids, nearest(centroids).astype(np.int32)


def check_search(exact_below: int, probes: int, where: str) -> None:
    if exact_below < 1 or probes < 0:
        raise ConfigError(f"{where}.exact_below must be >= 1 and {where}.probes >= 0, got {exact_below}, {probes}")


def _cell_extras(name: str) -> tuple[str, str]:
    """The bundle extras beside the bank ``name`` that hold its cells: the centroids and each row's cell."""
    return f"{name}_centroids", f"{name}_cells"


def search_cells(
    name: str, bank: np.ndarray, exact_below: int, probes: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], int]:
    """Export: the cells of an approximate search for the bank ``name`` when it has ``exact_below`` rows or more, as
    the bundle extras ``bank_scorer`` reads (``{name}_centroids``, ``{name}_cells``: each row's cell) and the probes
    the runtime uses; ({}, 0) for a bank searched exactly."""
    if len(bank) < exact_below or probes <= 0:
        return {}, 0
    cells = max(2 * probes, round(math.sqrt(len(bank)) / 2))
    centroids, assignment = fit_cells(bank, cells, seed=seed)
    centroids_extra, cells_extra = _cell_extras(name)
    return {centroids_extra: centroids, cells_extra: assignment}, probes


def bank_scorer(bundle: Bundle, name: str, bank: np.ndarray, probes: int) -> NearestNeighbourScorer:
    """The scorer of the bundle's bank (its extra ``name``): exact, or with ``probes`` > 0 through its cells
    (extras ``{name}_centroids`` and ``{name}_cells``, written by export with ``search_cells``)."""
    if not probes:
        return NearestNeighbourScorer(bank)
    cells = tuple(bundle.extra(extra) for extra in _cell_extras(name))
    try:
        return NearestNeighbourScorer(bank, cells=cells, probes=probes)
    except ValueError as e:
        raise BundleError(f"bundle {bundle.root}: {name}: {e}") from None


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
    if h % size == 0 and w % size == 0:  # equal windows: one reshaped mean, not a loop over windows
        return x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5), dtype=np.float32)

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
