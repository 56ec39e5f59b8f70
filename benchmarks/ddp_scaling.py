"""Throughput of one training process against several (DDP, `edgead train --nproc N`), side by side.

    python benchmarks/ddp_scaling.py --method diffusionad --nproc 1 2 --steps 60 --out benchmarks/results/ddp

Trains the method's `tiny` configuration on the generated demo data with each process count, alternating
twice, and reports samples per second (steps/s x the total batch) from each run's summary. On a CPU,
torchrun gives every process one thread (OMP_NUM_THREADS=1) while a single process uses all cores, so the
ratio says what DDP adds on this machine, not what GPUs would.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="diffusionad")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from edgead.data.demo import make_demo_dataset

    work = Path(tempfile.mkdtemp())
    data = make_demo_dataset(work / "data", size=64, n_train=32, n_val=6, n_test_good=6, n_per_defect=3)
    rows = []
    for r in range(a.repeats):
        for n in a.nproc:
            run = work / f"run-{n}-{r}"
            command = [
                sys.executable,
                "-m",
                "edgead.cli",
                "train",
                "--method",
                a.method,
                "--data",
                str(data),
                "--out",
                str(run),
                "--preset",
                "tiny",
                "--image-size",
                "64",
                "--steps",
                str(a.steps),
                "--batch-size",
                str(a.batch),
                "--device",
                "cpu",
                "--nproc",
                str(n),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            summary = json.loads(out)
            rate = summary.get("steps_per_s")
            rows.append({"nproc": n, "repeat": r, "steps_per_s": rate, "samples_per_s": rate * a.batch})
            print(rows[-1], flush=True)
    by_n = {n: [x["samples_per_s"] for x in rows if x["nproc"] == n] for n in a.nproc}
    best = {n: max(v) for n, v in by_n.items()}
    report = {
        "method": a.method,
        "steps": a.steps,
        "batch": a.batch,
        "rows": rows,
        "best_samples_per_s": best,
        "ratio_to_one_process": {n: best[n] / best[a.nproc[0]] for n in a.nproc},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.method}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["ratio_to_one_process"]))


if __name__ == "__main__":
    main()
