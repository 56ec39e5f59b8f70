"""ONNX Runtime's intra-op spinning on and off (edgead turns it off), per bundle, batch 1 and a larger batch.

    python benchmarks/ort_spinning.py BUNDLE... --images ../shared/data/tire/test/good \\
        --out benchmarks/results/ort_spinning.json

Each (bundle, setting, batch) is timed in a fresh process, the settings alternating twice, so a pool left
spinning by one measurement cannot slow the next; the medians of both repetitions are reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def measure(bundle: str, images: str, spinning: bool, batch: int, rounds: int) -> float:
    """Median ms per call of ``Detector.predict_rgb`` with ``batch`` frames (run in a child process)."""
    from edgead.core.bundle import load_bundle
    from edgead.core.preprocess import resize
    from edgead.data.io import read_image
    from edgead.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgead.runtime.detector import Detector

    b = load_bundle(bundle)
    frames = [resize(read_image(p), b.manifest.preprocess) for p in sorted(Path(images).iterdir())[:8]]
    backends = {
        e.name: OnnxRuntimeBackend(b.path(e.file), e.inputs, e.outputs, spinning=spinning) for e in b.manifest.stages
    }
    product = next(iter(b.manifest.products), None) if b.manifest.products else None
    with Detector(b, backends=backends, product=product) as det:
        det.predict_rgb(frames[:batch], keep_image=False)
        times = []
        for i in range(rounds):
            batch_frames = [frames[(i + j) % len(frames)] for j in range(batch)]
            t0 = time.perf_counter()
            det.predict_rgb(batch_frames, keep_image=False)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--images", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--child", nargs=3, metavar=("BUNDLE", "SPINNING", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(measure(a.child[0], a.images, a.child[1] == "on", int(a.child[2]), a.rounds))
        return
    rows = []
    for bundle in a.bundles:
        for batch in a.batch:
            ms: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(2):
                for setting in ("on", "off"):
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--images",
                            a.images,
                            "--rounds",
                            str(a.rounds),
                            "--child",
                            bundle,
                            setting,
                            str(batch),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    ms[setting].append(float(out.stdout.split()[-1]))
            row = {
                "bundle": Path(bundle).name,
                "batch": batch,
                "spinning_ms": float(np.median(ms["on"])),
                "no_spinning_ms": float(np.median(ms["off"])),
            }
            row["speedup"] = round(row["spinning_ms"] / row["no_spinning_ms"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        report = {"rows": rows, "rounds": a.rounds, "date": time.strftime("%Y-%m-%d")}
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
