"""fp32 against INT8 graphs per bundle on the CPU: which stages export keeps in INT8, quality on the test
set with each, and speed side by side.

For each ``--bundle NAME=PATH`` (data ``--data-root/NAME``; a bundle serving several products is
evaluated on each ``--products``): a copy gets INT8 graphs calibrated on ``train/good`` (export
--quantize int8, default tolerance), then image AUROC / AUPRO of the fp32 and INT8 graphs on the test
set, then median ms per frame of both, alternating in one process (batch 1 and 4).

    python benchmarks/int8_study.py --data-root ../shared/data \\
        --bundle tire=benchmarks/results/fusion/work/tire-fused.edgead ... --out benchmarks/results/int8
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from edgead.core.bundle import load_bundle
from edgead.core.errors import DataError, ExportError, SourceError
from edgead.data.datasets import load_dataset
from edgead.evaluation.evaluate import evaluate
from edgead.evaluation.speed import benchmark
from edgead.export.quantize import quantize_bundle
from edgead.runtime.detector import Detector


def quality(bundle: Path, data: Path, product: str | None, int8: bool) -> dict:
    with Detector.load(bundle, backend="onnxruntime-cpu", product=product, int8=int8) as det:
        r = evaluate(det, load_dataset(data, validation_fraction=0.0), progress=False).report
    return {
        "image_auroc": round(r["image"]["auroc"], 3),
        "aupro": round(r["pixel"]["aupro_0.3"], 3) if r["pixel"] else None,
        "false_reject_rate": round(r["at_calibrated_threshold"]["false_reject_rate"], 3),
        "miss_rate": round(r["at_calibrated_threshold"]["miss_rate"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bundle",
        action="append",
        required=True,
        metavar="NAME=PATH[@DATA]",
        help="DATA: the data folder's name under --data-root (default NAME)",
    )
    ap.add_argument("--products", nargs="*", default=[], help="Products of multi-product bundles (data folders).")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.bundle:
        name, _, path = spec.partition("=")
        path, _, data_name = path.partition("@")
        copy = out / "work" / f"{name}.edgead"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(path, copy)
        b = load_bundle(copy)
        products = list(b.manifest.products) if b.manifest.products else [None]
        calib = [Path(args.data_root) / (p or data_name or name) / "train" / "good" for p in products]
        row: dict = {"name": name, "method": b.method}
        try:
            report = quantize_bundle(
                copy, calib[0] if len(calib) == 1 else _joined(calib, out / "work" / f"{name}-good")
            )
        except (ExportError, DataError, SourceError) as exc:
            row.update(int8="none", why=str(exc))
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        row.update(
            stages={
                k: ("fp32: " + v["kept_fp32"])
                if "kept_fp32" in v
                else f"int8 (score {v['score_change']:.3f}, map {v['map_change']:.3f})"
                for k, v in report["stages"].items()
            },
            held_out_score_change=report["score_change"],
            held_out_map_change=report["map_change"],
        )
        row["quality"] = {}
        for p in products:
            data = Path(args.data_root) / (p or data_name or name)
            row["quality"][p or name] = {"fp32": quality(copy, data, p, False), "int8": quality(copy, data, p, True)}
        speed = benchmark(
            copy, "onnxruntime-cpu", batch=4, runs=args.runs, images=str(calib[0]), product=products[0], int8=True
        )
        row["ms_per_frame"] = {
            f"batch{bs}": {
                "fp32": round(speed["runtime"][f"batch{bs}"]["median_ms"] / bs, 1),
                "int8": round(speed["int8"][f"batch{bs}"]["median_ms"] / bs, 1),
                "speedup": round(1 / speed["int8_over_runtime"][f"batch{bs}"], 2),
            }
            for bs in (1, 4)
        }
        row["stage_ms_batch1"] = {
            k: {e: round(speed[e]["batch1"]["parts_median_ms"].get(k, 0.0), 1) for e in ("runtime", "int8")}
            for k in speed["runtime"]["batch1"]["parts_median_ms"]
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "int8_study.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| bundle | stages in INT8 (kept fp32) | product | image AUROC fp32 / int8 | AUPRO fp32 / int8 | "
        "ms/frame b1 fp32 / int8 | b4 fp32 / int8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("int8") == "none":
            lines.append(f"| {r['name']} ({r['method']}) | none: {r['why'][:160]} | | | | | |")
            continue
        kept = [k for k, v in r["stages"].items() if v.startswith("fp32")]
        q8 = [k for k in r["stages"] if k not in kept]
        for i, (prod, q) in enumerate(r["quality"].items()):
            s1, s4 = r["ms_per_frame"]["batch1"], r["ms_per_frame"]["batch4"]
            lines.append(
                f"| {r['name'] if i == 0 else ''} ({r['method']}) | {', '.join(q8) if i == 0 else ''}"
                f"{(' (' + ', '.join(kept) + ')') if i == 0 and kept else ''} | {prod} | "
                f"{q['fp32']['image_auroc']} / {q['int8']['image_auroc']} | {q['fp32']['aupro']} / {q['int8']['aupro']} | "
                + (
                    f"{s1['fp32']} / {s1['int8']} ({s1['speedup']}x) | {s4['fp32']} / {s4['int8']} ({s4['speedup']}x) |"
                    if i == 0
                    else " | |"
                )
            )
    (out / "int8_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _joined(folders: list[Path], target: Path) -> Path:
    """One folder of good images from several products (a multi-product bundle is calibrated on all)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for folder in folders:
        for f in sorted(folder.iterdir())[:16]:
            (target / f"{folder.parent.parent.name}_{f.name}").symlink_to(f.resolve())
    return target


if __name__ == "__main__":
    main()
