"""What PatchCore's 10% coreset costs at run time: the nearest-neighbour search of one frame against the bundle's
memory bank, exact and through the k-means cells export fits for a large bank (edgead 0.11's default, with the
share of patches whose neighbour it finds exactly), beside the same search against a 1% bank (every tenth row of
the same bank: the size edgead used before 0.9), beside edgead 0.9's whole-matrix search and beside the feature
extractor, alternated in blocks on the same frames.

    python benchmarks/knn_bank_size.py tire-patchcore.edgead ../shared/data/tire/test/cut \\
        --out benchmarks/results/knn_bank_size_tire_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgead import Detector
from edgead.core.knn import EXACT_BELOW, PROBES, NearestNeighbourScorer, search_cells
from edgead.core.preprocess import to_batch
from edgead.data.io import list_images, read_image


def whole_matrix_distances(scorer: NearestNeighbourScorer, features: np.ndarray) -> np.ndarray:
    """The search as edgead 0.9 did it: the whole [patches, bank] distance matrix at once (the reference the blocked
    search is measured against, side by side)."""
    b, c, h, w = features.shape
    q = features.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float32)
    d2 = (q**2).sum(1, keepdims=True) - 2.0 * q @ scorer.bank.T + scorer.bank_sq[None]
    return np.sqrt(np.maximum(d2.min(1), 0.0)).reshape(b, h, w)


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    with Detector.load(a.bundle, backend="onnxruntime-cpu") as detector:
        bank = detector.bundle.extra("memory_bank")
        frames = [to_batch([read_image(f)], detector.manifest.preprocess) for f in list_images(a.images)[: a.frames]]
        features = [detector.run_stage("feature_extractor", {"image": x})["features"] for x in frames]
        cells, probes = search_cells("memory_bank", bank, min(EXACT_BELOW, len(bank)), PROBES)
        centroids, assignment = cells["memory_bank_centroids"], cells["memory_bank_cells"]
        scorers = {
            "10%": NearestNeighbourScorer(bank),
            "10% cells": NearestNeighbourScorer(bank, cells=(centroids, assignment), probes=probes),
            "1%": NearestNeighbourScorer(bank[::10]),
        }
        parts = {
            "feature_extractor": lambda: [detector.run_stage("feature_extractor", {"image": x}) for x in frames],
            **{f"knn {k}": (lambda s=s: [s.distances(f) for f in features]) for k, s in scorers.items()},
            "knn 10% whole matrix (0.9)": lambda: [whole_matrix_distances(scorers["10%"], f) for f in features],
        }
        diff = max(
            float(np.max(np.abs(scorers["10%"].distances(f) - whole_matrix_distances(scorers["10%"], f))))
            for f in features
        )
        exact = [scorers["10%"].distances(f) for f in features]
        probed = [scorers["10% cells"].distances(f) for f in features]
        found = float(np.mean([np.isclose(p, e, rtol=1e-4, atol=1e-4).mean() for p, e in zip(probed, exact)]))
        excess = max(float(np.max((p - e) / np.maximum(e, 1e-6))) for p, e in zip(probed, exact))
        score_excess = max(float(p.max() / e.max() - 1.0) for p, e in zip(probed, exact))
        for fn in parts.values():  # warm-up
            fn()
        blocks: dict[str, list[float]] = {name: [] for name in parts}
        for _ in range(a.blocks):
            for name, fn in parts.items():
                blocks[name].append(median_ms(fn, 3) / len(frames))
    ms = {name: float(np.median(v)) for name, v in blocks.items()}
    report = {
        "bundle": str(a.bundle),
        "bank_rows": {"10%": int(bank.shape[0]), "1%": int(bank[::10].shape[0])},
        "channels": int(bank.shape[1]),
        "patches_per_frame": int(np.prod(features[0].shape[2:])),
        "ms_per_frame": ms,
        "knn_10_over_1": ms["knn 10%"] / ms["knn 1%"],
        "knn_10_over_feature_extractor": ms["knn 10%"] / ms["feature_extractor"],
        "whole_matrix_over_blocked": ms["knn 10% whole matrix (0.9)"] / ms["knn 10%"],
        "blocked_vs_whole_max_abs_diff": diff,
        "cells": {
            "cells": int(len(centroids)),
            "probes": probes,
            "exact_neighbour_found": found,
            "max_relative_excess": excess,
            "max_frame_maximum_excess": score_excess,
            "exact_over_cells": ms["knn 10%"] / ms["knn 10% cells"],
        },
    }
    print(json.dumps(report, indent=2))
    if a.out:
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
