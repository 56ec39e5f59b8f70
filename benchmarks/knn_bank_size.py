"""What PatchCore's 10% coreset costs at run time: the nearest-neighbour search of one frame against the bundle's
memory bank, beside the same search against a 1% bank (every tenth row of the same bank: the size edgead used
before 0.9) and beside the feature extractor, alternated in blocks on the same frames.

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
from edgead.core.knn import NearestNeighbourScorer
from edgead.core.preprocess import to_batch
from edgead.data.io import list_images, read_image


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
        scorers = {"10%": NearestNeighbourScorer(bank), "1%": NearestNeighbourScorer(bank[::10])}
        parts = {
            "feature_extractor": lambda: [detector.run_stage("feature_extractor", {"image": x}) for x in frames],
            **{f"knn {k}": (lambda s=s: [s.distances(f) for f in features]) for k, s in scorers.items()},
        }
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
    }
    print(json.dumps(report, indent=2))
    if a.out:
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
