"""Latent diffusion runs against the PatchCore baseline, with the contribution of each map visible.

For every run (one product each, or a multi-product DiAD run with ``--product``-free evaluation per
set) three exports of the same training run — the fused map (weight chosen on synthetic anomalies),
the reconstruction map alone (``knn.weight=0``, the paper's map) and the patch kNN map alone
(``knn.weight=1``) — and the baseline fitted on the same set, all evaluated through the PyTorch-free
runtime on the test images. Writes OUT/fusion_study.json and OUT/fusion_study.md.

    python benchmarks/fusion_study.py --run tire=runs/tire-d3ad-s --run grid=runs/grid-d3ad-s \\
        --data-root ../shared/data --out benchmarks/results/fusion
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgead.core.config import load_config
from edgead.data.datasets import load_dataset
from edgead.evaluation.evaluate import evaluate, save_sheets
from edgead.export.flow import export_run
from edgead.runtime.detector import Detector
from edgead.training.checkpoint import read_checkpoint_meta

VARIANTS = {"fused": None, "reconstruction": 0.0, "knn": 1.0}
"""Variant -> the kNN map's weight (None: chosen at export on synthetic anomalies)."""


def _export(
    run: Path, out: Path, method: str, variant: str, data: list[str], parity: int, extra: list[str]
) -> tuple[Path, float]:
    if out.exists():
        return out, 0.0
    overrides = list(extra) + ([] if VARIANTS[variant] is None else [f"{method}.knn.weight={VARIANTS[variant]}"])
    t0 = time.perf_counter()
    export_run(run, out, data=data, parity_images=parity, progress=False, overrides=overrides)
    return out, time.perf_counter() - t0


def _row(detector: Detector, data: Path, sheets: Path | None, name: str) -> dict:
    ev = evaluate(detector, load_dataset(data), progress=False)
    r = ev.report
    if sheets is not None:
        save_sheets(detector, ev, sheets, name=f"{name}.png")
    fusion = getattr(detector.manifest.params, "fusion", None)
    cal = detector.calibration
    return {
        "image": r["image"],
        "pixel": r["pixel"],
        "at_calibrated_threshold": r["at_calibrated_threshold"],
        "per_defect_auroc": r["per_defect_auroc"],
        "seconds_per_image": r["seconds_per_image"],
        "knn_weight": None if fusion is None else fusion.knn_weight,
        "export_fusion": detector.manifest.provenance.get("export", {}).get("fusion"),
        "calibration_warnings": list(cal.warnings) if cal else [],
    }


def baseline(data: Path, work: Path) -> Path:
    from edgead.training import train

    run, bundle = work / f"{data.name}-patchcore", work / f"{data.name}-patchcore.edgead"
    if not run.exists():
        t0 = time.perf_counter()
        train(load_config(None, ["method=patchcore", f"data.path={data}"]), run, progress=False)
        print(f"patchcore {data.name}: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    if not bundle.exists():
        export_run(run, bundle, parity_images=8, progress=False)
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="LABEL=RUN",
        help="a training run of a latent method (repeat); LABEL names its rows",
    )
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parity-images", type=int, default=8)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--sheets", action="store_true", help="save sheets (they show the data set's images)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an export setting for every variant (edgead export --set), e.g. d3ad.knn.candidates=[...]",
    )
    a = ap.parse_args()
    work = a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results_file = a.out / "fusion_study.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for item in a.run:
        label, _, run = item.partition("=")
        meta, config = read_checkpoint_meta(run)
        products = [Path(p).name for p in config.data_paths]
        data = [str(a.data_root / p) for p in products]
        for variant in a.variants:
            bundle, seconds = _export(
                Path(run), work / f"{label}-{variant}.edgead", config.method, variant, data, a.parity_images, a.sets
            )
            for product in products:
                multi = len(products) > 1
                with Detector.load(bundle, backend="onnxruntime-cpu", product=product if multi else None) as det:
                    row = _row(
                        det,
                        a.data_root / product,
                        work / "sheets" if a.sheets else None,
                        f"{label}-{variant}-{product}",
                    )
                row.update(run=run, method=config.method, variant=variant, export_seconds=round(seconds, 1))
                results.setdefault(product, {})[f"{label} / {variant}"] = row
                print(
                    f"{product} {label} {variant}: image AUROC {row['image']['auroc']:.3f}, AUPRO "
                    f"{row['pixel']['aupro_0.3']:.3f}, weight {row['knn_weight']}",
                    flush=True,
                )
                results_file.write_text(json.dumps(results, indent=1))
    for product in sorted({p for r in a.run for p in read_checkpoint_meta(r.partition("=")[2])[1].data_paths}):
        data = a.data_root / Path(product).name
        with Detector.load(baseline(data, work), backend="onnxruntime-cpu") as det:
            row = _row(det, data, work / "sheets" if a.sheets else None, f"patchcore-{data.name}")
        row.update(method="patchcore", variant="baseline")
        results.setdefault(data.name, {})["PatchCore baseline"] = row
        results_file.write_text(json.dumps(results, indent=1))
    (a.out / "fusion_study.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "| set | model / map | kNN weight | image AUROC | pixel AUROC | pixel AP | AUPRO@0.3 | "
        "false rejects / misses at the bundle's threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for product in sorted(results):
        for name, r in results[product].items():
            i, p, t = r["image"], r["pixel"], r["at_calibrated_threshold"]
            w = "—" if r.get("knn_weight") is None else f"{r['knn_weight']:.2f}"
            lines.append(
                f"| {product} | {name} | {w} | {i['auroc']:.3f} | {p['auroc']:.3f} | {p['ap']:.3f} | "
                f"{p['aupro_0.3']:.3f} | {t['false_reject_rate']:.0%} / {t['miss_rate']:.0%} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
