"""Frames per second of several bundles side by side: each loaded once in one process and timed alternately on
the same frames (batch 1, the ONNX Runtime CPU backend), so the machine's noise hits them alike; the per-stage
times come from the runtime's own timings. ``BUNDLE[:int8]`` runs a bundle's INT8 graphs.

    python benchmarks/line_speed.py exact=out42/tire-patchcore.edgead cells=out43/tire-patchcore.edgead \\
        --images ../shared/data/tire/test/good --out benchmarks/results/line_speed/tire.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from edgead import Detector
from edgead.data.io import list_images, read_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+", metavar="LABEL=BUNDLE[:int8]")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    frames = [read_image(f) for f in list_images(a.images)[: a.frames]]
    detectors, int8 = {}, {}
    for item in a.bundles:
        label, _, path = item.partition("=")
        path, _, flag = path.partition(":")
        int8[label] = flag == "int8"
        detectors[label] = Detector.load(path, backend="onnxruntime-cpu", int8=int8[label])
    times: dict[str, list[float]] = {k: [] for k in detectors}
    parts: dict[str, list[dict[str, float]]] = {k: [] for k in detectors}
    for d in detectors.values():  # warm-up
        d.predict(frames[0])
    for _ in range(a.rounds):
        for label, d in detectors.items():
            for f in frames:
                t0 = time.perf_counter()
                r = d.predict(f)
                times[label].append((time.perf_counter() - t0) * 1e3)
                parts[label].append(dict(r.latency_ms))
    first = next(iter(detectors))
    report = {
        "images": str(a.images),
        "frames": len(frames),
        "rounds": a.rounds,
        "machine": platform.processor() or platform.machine(),
        "bundles": {
            label: {
                "bundle": str(d.bundle.root),
                "int8": int8[label],
                "median_ms": float(np.median(times[label])),
                "p90_ms": float(np.percentile(times[label], 90)),
                "frames_per_s": 1e3 / float(np.median(times[label])),
                "speedup": float(np.median(times[first]) / np.median(times[label])),
                "parts_median_ms": {
                    k: float(np.median([t.get(k, 0.0) for t in parts[label]])) for k in parts[label][0]
                },
            }
            for label, d in detectors.items()
        },
    }
    for d in detectors.values():
        d.close()
    for label, r in report["bundles"].items():
        print(
            f"{label:28s} {r['median_ms']:7.1f} ms  p90 {r['p90_ms']:6.1f}  {r['frames_per_s']:6.1f} frames/s  "
            f"{r['speedup']:.2f}x"
        )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
