"""``edgead demo``: the whole path on a generated data set, on a CPU, in a few minutes.

generate data -> train the tiny DiffusionAD -> export (ONNX, calibration, parity) ->
detect every test image through the runtime (overlays + JSON lines) -> evaluate.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .core.errors import EdgeadError, require
from .core.outputs import check_replaceable

DEMO_OUTPUTS = {"data", "run", "demo.edgead", "results.jsonl", "overlays", "sheet.png", "report.json"}
"""What a demo writes: ``--overwrite`` deletes a folder that holds nothing else."""


def _holds_only_a_demo(folder: Path) -> bool:
    names = [e.name for e in folder.iterdir()]  # hidden ones: temporary files of an interrupted demo
    return all(n in DEMO_OUTPUTS or any(n.startswith(f".{o}.") for o in DEMO_OUTPUTS) for n in names)


def run_demo(
    out: Path,
    steps: int = 600,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    image_size: int = 64,
) -> dict:
    require("torch", 'pip install "edgead[train]"', "The demo (it trains a model)")
    from .core.config import load_config
    from .data.datasets import load_dataset
    from .data.demo import make_demo_dataset
    from .data.io import write_image
    from .evaluation.evaluate import evaluate, format_table, save_sheets
    from .export.flow import export_run
    from .runtime.detector import Detector
    from .training import train

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgeadError(
                f"{out} is not empty; pass --overwrite to replace the previous demo (nothing was changed)"
            )
        check_replaceable(out, _holds_only_a_demo, "a previous demo")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    data = make_demo_dataset(out / "data")
    echo(f"[1/5] generated a woven-surface product data set in {data} (train/validation/test with masks)")
    config = load_config(
        None,
        [
            f"data.path={data}",
            f"data.image_size={image_size}",
            "model.preset=tiny",
            f"train.steps={steps}",
            "train.batch_size=8",
            "train.learning_rate=1e-3",
            "train.device=cpu",
            "train.checkpoint_every=100000",
        ],
    )
    timings["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    echo(f"[2/5] training the tiny DiffusionAD preset for {steps} steps on the CPU ...")
    summary = train(config, out / "run", progress=True)  # a bar on a terminal, a line every 10 s in a log
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    echo("[3/5] exporting ONNX graphs, calibrating on validation images, checking parity with PyTorch ...")
    bundle, parity = export_run(out / "run", out / "demo.edgead", parity_images=16, progress=progress)
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset(data)
    echo(f"[4/5] detecting {len(ds.test)} test images through the runtime (no PyTorch) ...")
    results_path = out / "results.jsonl"
    with Detector.load(bundle.root) as det, results_path.open("w") as f:
        for s in ds.test:
            r = det.predict(s.path)
            f.write(json.dumps({**r.to_dict(), "label": s.defect}) + "\n")
            write_image(out / "overlays" / f"{s.defect}_{s.path.stem}.png", r.overlay(color="rgb"))
        timings["detect_s"] = time.perf_counter() - t
        echo("[5/5] evaluating ...")
        run = evaluate(det, ds, progress=progress)
        save_sheets(det, run, out)
    (out / "report.json").write_text(json.dumps(run.report, indent=2))
    echo(format_table(run.report))
    echo(
        f"parity (ONNX Runtime vs PyTorch): max |score diff| {parity['score_max_abs_diff']:.2e}, "
        f"decisions agree {parity['decisions_agree']}/{parity['images']}"
    )
    echo(f"outputs in {out}: demo.edgead (bundle), results.jsonl, overlays/, sheet.png, report.json")
    return {"train": summary, "parity": parity, "report": run.report, "timings": timings}
