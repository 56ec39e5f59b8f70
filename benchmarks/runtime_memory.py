"""Runtime peak memory and latency of every DiffusionAD preset (ONNX Runtime CPU), side by side.

Weights are random (memory and speed do not depend on them): each preset gets a run folder with
freshly initialised networks, is exported (calibrated on a data set's good images), and
``edgead benchmark`` then runs it in a fresh process, reporting the runtime's peak resident
memory (VmHWM) before PyTorch is ever imported.

    python benchmarks/runtime_memory.py --data ../shared/data/grid --presets tiny s m --out mem.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgead.core.config import load_config
from edgead.export.flow import export_run
from edgead.methods.diffusionad.networks import (
    build_denoiser,
    build_segmenter,
    resolve_network,
)
from edgead.training.checkpoint import save_checkpoint


def random_run(preset: str, data: str, size: int, out: Path) -> Path:
    cfg = load_config(None, [f"model.preset={preset}", f"data.path={data}", f"data.image_size={size}"])
    net = resolve_network(cfg.model, size)
    save_checkpoint(
        out,
        cfg,
        net,
        {"denoiser": build_denoiser(net, size), "segmenter": build_segmenter(net)},
        extra={"steps_done": 0},
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--presets", nargs="+", default=["tiny", "s", "m"])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in a.presets:
            run = random_run(preset, a.data, a.image_size, Path(tmp) / preset)
            bundle, _ = export_run(run, Path(tmp) / f"{preset}.edgead", parity_images=1, progress=False)
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edgead.cli",
                    "benchmark",
                    str(bundle.root),
                    "--backend",
                    "onnxruntime-cpu",
                    "--runs",
                    str(a.runs),
                    "--batch",
                    str(a.batch),
                    "--out",
                    str(Path(tmp) / f"{preset}.json"),
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            rep = json.loads((Path(tmp) / f"{preset}.json").read_text())
            rows.append(
                {
                    "preset": preset,
                    "image_size": a.image_size,
                    "runtime_peak_rss_mb": round(rep["peak_rss_mb_runtime"]),
                    "batch1_ms": round(rep["runtime"]["batch1"]["median_ms"], 1),
                    f"batch{a.batch}_ms": round(rep["runtime"][f"batch{a.batch}"]["median_ms"], 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"backend": "onnxruntime-cpu", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
