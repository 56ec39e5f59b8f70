"""D3AD (or DiAD) made faster without retraining (sampler steps, INT8) and with a cheaper decoder (a retrained
variant): quality per set and speed side by side, from the same training runs.

    python benchmarks/latent_speed_study.py --data-root ../shared/data --steps 10 5 3 \\
        --run tire=runs/tire-d3ad-s --run tire/half=runs/tire-d3ad-s-half ... [--int8 tire/half] \\
        --out benchmarks/results/latent_speed

``--run LABEL=RUN_DIR``: LABEL is the data set's folder under --data-root, optionally followed by
``/variant``. Each run is exported once per step count (``--set <method>.num_steps=N``: an inference
setting; the fusion weight is chosen again on synthetic anomalies, as any export does) and evaluated on
the set's test images through the runtime (ONNX Runtime, CPU). ``--int8 LABEL...`` also gives those
runs' bundles INT8 graphs calibrated on the set's ``train/good`` (export --quantize int8, default
tolerance) and evaluates them. Speed: every bundle of the first set is loaded in one process and timed
alternately on the same frames (batch 1), so machine noise hits them alike; speed-ups are against the
first bundle. Bundles and evaluations already in the work folder are reused, so a second invocation
only times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="SET[/VARIANT]=RUN_DIR")
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 5, 3])
    ap.add_argument(
        "--int8",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="Runs (labels of --run, of the first set) whose bundles also get INT8 graphs.",
    )
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from edgead import Detector
    from edgead.core.bundle import load_bundle
    from edgead.core.preprocess import resize
    from edgead.data.datasets import load_dataset
    from edgead.data.io import read_image
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run
    from edgead.export.quantize import quantize_bundle
    from edgead.training.checkpoint import read_checkpoint_meta

    work = a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "quality.json"  # evaluations of earlier invocations, by bundle and precision
    quality: dict[str, dict] = json.loads(cache.read_text()) if cache.exists() else {}
    bundles: dict[str, Path] = {}
    sets: dict[str, str] = {}
    first = a.run[0].partition("=")[0].partition("/")[0]
    for item in a.run:
        label, _, run = item.partition("=")
        name = label.partition("/")[0]
        method = read_checkpoint_meta(run)[0]["method"]
        ds = load_dataset(a.data_root / name, validation_fraction=0.0)
        for n in a.steps:
            out = work / f"{label.replace('/', '-')}-{n}steps.edgead"
            if not out.exists():
                export_run(run, out, parity_images=8, progress=False, overrides=[f"{method}.num_steps={n}"])
            if label in a.int8 and load_bundle(out).manifest.int8 is None:
                quantize_bundle(out, a.data_root / name / "train" / "good")
            for precision in ["fp32", "int8"] if label in a.int8 else ["fp32"]:
                key = f"{label} {n} steps {precision}"
                bundles[key], sets[key] = out, name
                if key in quality:
                    continue
                with Detector.load(out, backend="onnxruntime-cpu", int8=precision == "int8") as det:
                    r = evaluate(det, ds, progress=False).report
                quality[key] = {
                    "image_auroc": r["image"]["auroc"],
                    "pixel_auroc": r["pixel"]["auroc"],
                    "aupro": r["pixel"]["aupro_0.3"],
                    "knn_weight": det.manifest.params.fusion.knn_weight,
                }
                print(key, quality[key], flush=True)
                cache.write_text(json.dumps(quality, indent=1))
    timed = [k for k in bundles if sets[k] == first]
    ds = load_dataset(a.data_root / first, validation_fraction=0.0)
    spec = load_bundle(bundles[timed[0]]).manifest.preprocess
    frames = [resize(read_image(s.path), spec) for s in ds.test[:8]]
    dets = {k: Detector.load(bundles[k], backend="onnxruntime-cpu", int8=k.endswith("int8")) for k in timed}
    times: dict[str, list[float]] = {k: [] for k in dets}
    parts: dict[str, list[dict]] = {k: [] for k in dets}
    for det in dets.values():  # warm-up
        det.predict_rgb([frames[0]], keep_image=False)
    for i in range(a.rounds):
        for k, det in dets.items():
            t0 = time.perf_counter()
            res = det.predict_rgb([frames[i % len(frames)]], keep_image=False)[0]
            times[k].append((time.perf_counter() - t0) * 1e3)
            parts[k].append(res.latency_ms)
    speed = {
        k: {
            "median_ms": float(np.median(t)),
            "parts_ms": {p: float(np.median([x[p] for x in parts[k]])) for p in parts[k][0]},
        }
        for k, t in times.items()
    }
    base = speed[timed[0]]["median_ms"]
    for k in speed:
        speed[k]["speedup"] = base / speed[k]["median_ms"]
    report = {
        "quality": {k: quality[k] for k in bundles},
        "speed_on": first,
        "speed": speed,
        "rounds": a.rounds,
        "date": time.strftime("%Y-%m-%d"),
    }
    (a.out / "latent_speed_study.json").write_text(json.dumps(report, indent=2))
    (a.out / "latent_speed_study.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    """The two tables of docs/studies.md: quality per bundle, and the timed bundles' medians and stages."""
    lines = ["| bundle | image AUROC | pixel AUROC | AUPRO@0.3 | kNN weight |", "|---|---|---|---|---|"]
    for k, q in report["quality"].items():
        lines.append(
            f"| {k} | {q['image_auroc']:.3f} | {q['pixel_auroc']:.3f} | {q['aupro']:.3f} | {q['knn_weight']} |"
        )
    stages = ("encoder", "hint_encoder", "denoiser_step", "decoder", "feature_extractor")
    lines += [
        "",
        f"| bundle ({report['speed_on']}) | ms/frame (median) | speed-up | " + " | ".join(stages) + " | the rest |",
        "|---|---|---|" + "---|" * (len(stages) + 1),
    ]
    for k, v in report["speed"].items():
        parts = v["parts_ms"]
        known = [parts.get(s, 0.0) for s in stages]
        rest = sum(x for p, x in parts.items() if p not in ("total", "sampling_loop")) - sum(known)  # subtotals
        lines.append(
            f"| {k} | {v['median_ms']:.0f} | {v['speedup']:.2f}x | "
            + " | ".join(f"{x:.0f}" if x else "—" for x in known)
            + f" | {rest:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
