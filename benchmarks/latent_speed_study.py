"""D3AD with fewer sampler steps: quality per set and speed side by side, from the same training runs.

    python benchmarks/steps_study.py --run tire=runs/tire-d3ad-s --run grid=runs/grid-d3ad-s \\
        --run hazelnut_toy=runs/hazelnut_toy-d3ad-s --data-root ../shared/data --steps 10 5 3 \\
        --out benchmarks/results/steps

Each run is exported once per step count (``--set d3ad.num_steps=N``: an inference setting, no retraining;
the fusion weight is chosen again on synthetic anomalies, as any export does) and evaluated on the set's
test images through the runtime (ONNX Runtime, CPU). Speed: the bundles of the first run are loaded in one
process and timed alternately on the same frames (batch 1), so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="SET=RUN_DIR")
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 5, 3])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from edgead import Detector
    from edgead.core.preprocess import resize
    from edgead.data.datasets import load_dataset
    from edgead.data.io import read_image
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run

    work = a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    quality, bundles = {}, {}
    for item in a.run:
        name, _, run = item.partition("=")
        ds = load_dataset(a.data_root / name, validation_fraction=0.0)
        for n in a.steps:
            out = work / f"{name}-{n}steps.edgead"
            if not out.exists():
                export_run(run, out, parity_images=8, progress=False, overrides=[f"d3ad.num_steps={n}"])
            bundles.setdefault(name, {})[n] = out
            with Detector.load(out, backend="onnxruntime-cpu") as det:
                r = evaluate(det, ds, progress=False).report
            quality.setdefault(name, {})[n] = {
                "image_auroc": r["image"]["auroc"], "pixel_auroc": r["pixel"]["auroc"],
                "aupro": r["pixel"]["aupro_0.3"], "knn_weight": det.manifest.params.fusion.knn_weight}
            print(name, n, quality[name][n], flush=True)
    first = next(iter(bundles))
    ds = load_dataset(a.data_root / first, validation_fraction=0.0)
    frames = [resize(read_image(s.path), Detector.load(bundles[first][a.steps[0]]).manifest.preprocess)
              for s in ds.test[:8]]
    dets = {n: Detector.load(b, backend="onnxruntime-cpu") for n, b in bundles[first].items()}
    times: dict[int, list[float]] = {n: [] for n in dets}
    parts: dict[int, list[dict]] = {n: [] for n in dets}
    for n, det in dets.items():  # warm-up
        det.predict_rgb([frames[0]], keep_image=False)
    for i in range(a.rounds):
        for n, det in dets.items():
            t0 = time.perf_counter()
            res = det.predict_rgb([frames[i % len(frames)]], keep_image=False)[0]
            times[n].append((time.perf_counter() - t0) * 1e3)
            parts[n].append(res.latency_ms)
    speed = {n: {"median_ms": float(np.median(t)),
                 "parts_ms": {k: float(np.median([p[k] for p in parts[n]])) for k in parts[n][0]}}
             for n, t in times.items()}
    base = speed[a.steps[0]]["median_ms"]
    for n in speed:
        speed[n]["speedup"] = base / speed[n]["median_ms"]
    report = {"quality": quality, "speed_on": first, "speed": speed, "rounds": a.rounds,
              "date": time.strftime("%Y-%m-%d")}
    (a.out / "steps_study.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(speed, indent=2))


if __name__ == "__main__":
    main()
