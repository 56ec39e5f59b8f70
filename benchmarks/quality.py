"""Quality harness: DiffusionAD next to the PatchCore-style baseline on several data sets.

For each set: fit the baseline (EfficientNet-Lite0 features, 1% coreset), export it, and export
the given DiffusionAD training run (or train the `s` preset on this machine for a bounded time);
evaluate both through the ONNX runtime; write quality.json, quality.md, roc_<set>.png and
sample sheets (input / reconstruction / map / mask / ground truth).

    python benchmarks/quality.py --data-root ../shared/data --sets tire grid hazelnut_toy \\
        --diffusionad-run 'runs/{set}-s' --out benchmarks/results/quality

Sheets show data set images: keep them out of the repository when the data's licence says so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgead.core.config import load_config
from edgead.data.datasets import load_dataset
from edgead.evaluation.evaluate import evaluate, format_table, save_sheets
from edgead.evaluation.report import roc_figure
from edgead.export.flow import export_run
from edgead.runtime.detector import Detector

FOREGROUND = {"tire": True, "hazelnut_toy": True}


def bundle_for(run: Path, bundle: Path, data: Path) -> Path:
    if not bundle.exists():
        export_run(run, bundle, data=str(data), parity_images=None, progress=False)
    return bundle


def train_diffusionad(data: Path, run: Path, minutes: float, textures: str | None) -> None:
    from edgead.training import train

    overrides = [
        f"data.path={data}",
        "model.preset=s",
        f"train.max_minutes={minutes}",
        "train.steps=1000000",
        f"data.foreground={str(FOREGROUND.get(data.name, False)).lower()}",
        "train.learning_rate=2e-4",
    ]
    if textures:
        overrides.append(f"data.textures={textures}")
    train(load_config(None, overrides), run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["tire", "grid", "hazelnut_toy"])
    ap.add_argument("--diffusionad-run", help="run folder pattern with {set}; missing runs are trained here")
    ap.add_argument("--train-minutes", type=float, default=30.0, help="CPU training budget for a missing run")
    ap.add_argument("--textures", help="texture folder for training missing runs")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / "work"
    results: dict = {"date": time.strftime("%Y-%m-%d"), "sets": {}}
    for name in a.sets:
        data = a.data_root / name
        ds = load_dataset(data)
        methods = {}
        pc_run, pc_bundle = work / f"{name}-patchcore", work / f"{name}-patchcore.edgead"
        if not pc_run.exists():
            from edgead.training import train

            train(load_config(None, ["method=patchcore", f"data.path={data}"]), pc_run)
        methods["patchcore (baseline)"] = bundle_for(pc_run, pc_bundle, data)
        if a.diffusionad_run:
            run = Path(a.diffusionad_run.format(set=name))
            if not run.exists():
                train_diffusionad(data, run, a.train_minutes, a.textures)
            methods["diffusionad"] = bundle_for(run, work / f"{name}-diffusionad.edgead", data)
        curves, entry = {}, {}
        for method, bundle in methods.items():
            with Detector.load(bundle, backend="onnxruntime-cpu") as det:
                ev = evaluate(det, ds, progress=False)
                (sheet,) = save_sheets(det, ev, a.out / "sheets", name=f"{name}-{method.split()[0]}.png")
                steps = det.manifest.provenance.get("training", {}).get("steps")
            ev.report["sheet"] = str(sheet)
            ev.report["training_steps"] = steps
            entry[method] = ev.report
            curves[method] = ([s.label for s in ev.samples], ev.scores)
            print(f"== {name} / {method}\n{format_table(ev.report)}", flush=True)
        roc_figure(curves, a.out / f"roc_{name}.png", title=f"{name}: image-level ROC")
        results["sets"][name] = entry
    (a.out / "quality.json").write_text(json.dumps(results, indent=2))
    (a.out / "quality.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "| set | method | image AUROC | image AP | image F1max | pixel AUROC | pixel AP | pixel F1max | AUPRO@0.3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["sets"].items():
        for method, r in entry.items():
            i, p = r["image"], r["pixel"] or {}
            lines.append(
                f"| {name} | {method} | {i['auroc']:.3f} | {i['ap']:.3f} | {i['f1max']:.3f} | "
                f"{p.get('auroc', float('nan')):.3f} | {p.get('ap', float('nan')):.3f} | "
                f"{p.get('f1max', float('nan')):.3f} | {p.get('aupro_0.3', float('nan')):.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
