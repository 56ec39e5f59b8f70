"""Training throughput: steps/s, GPU utilisation and GPU memory per preset and speed option.

Each configuration runs ``edgead train`` in its own process for ``--warmup + --steps`` steps (every
loop stage of a latent method: autoencoder, denoiser, and DiAD's guidance, each that many steps);
steps/s is read from train_log.jsonl, per stage, between the line at ``--warmup`` and the stage's last
line (the loop synchronises with the GPU at every log line, so those times are exact). GPU utilisation and
memory are sampled from NVML (nvidia-ml-py) or nvidia-smi every 0.2 s while a run is past its
warm-up. ``--baseline-src`` times another edgead source tree (e.g. the previous release) with the
same data and batch, for a before/after ratio measured in one run of this script:

    python benchmarks/train_speed.py --data DATA/tire --textures TEXTURES --foreground \\
        --presets s --variants fp32 bf16 bf16-cl bf16-cl-compile --baseline-src .baseline --out speed.json
    python benchmarks/train_speed.py --method diad --data DATA/grid --variants fp32 bf16 bf16-cl \\
        --warmup 30 --steps 90 --log-every 15 --out speed-diad.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = {
    "fp32": [],
    "bf16": ["train.mixed_precision=true"],
    "bf16-cl": ["train.mixed_precision=true", "train.channels_last=true"],
    "bf16-compile": ["train.mixed_precision=true", "train.compile=true"],
    "bf16-cl-compile": ["train.mixed_precision=true", "train.channels_last=true", "train.compile=true"],
}


class GpuSampler:
    """Samples GPU utilisation (%) and memory used (MiB) in a thread."""

    def __init__(self, period_s: float = 0.2):
        self.period_s, self.samples, self.active = period_s, [], False
        self._stop = threading.Event()
        self._read = self._nvml_reader() or self._smi_reader()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _nvml_reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: (pynvml.nvmlDeviceGetUtilizationRates(h).gpu, pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
        except Exception:
            return None

    @staticmethod
    def _smi_reader():
        if shutil.which("nvidia-smi") is None:
            return None

        def read():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout
            util, mem = out.strip().splitlines()[0].split(",")
            return float(util), float(mem)

        return read

    def _loop(self):
        while not self._stop.is_set():
            if self.active and self._read is not None:
                self.samples.append(self._read())
            time.sleep(self.period_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_mem_peak_mib": None}
        utils = [u for u, _ in self.samples]
        return {
            "gpu_util_mean": round(sum(utils) / len(utils), 1),
            "gpu_mem_peak_mib": round(max(m for _, m in self.samples)),
        }


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def time_one(name: str, args: argparse.Namespace, src: Path, sets: list[str], run: Path) -> dict:
    total = args.warmup + args.steps
    # -P: the working directory is not put first on sys.path, so PYTHONPATH decides which tree runs
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "edgead.cli",
        "train",
        "--method",
        args.method,
        "--data",
        args.data,
        "--out",
        str(run),
        "--steps",
        str(total),
        "--device",
        args.device,
        "--image-size",
        str(args.image_size),
        "--set",
        "train.checkpoint_every=1000000",
        "--set",
        f"train.log_every={args.log_every}",
    ]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.method in ("d3ad", "diad"):  # --steps sets the denoiser's (and DiAD's guidance) steps
        cmd += ["--set", f"{args.method}.autoencoder.steps={total}"]
    if args.preset_flag:
        cmd += ["--preset", args.preset_flag]
    if args.textures:
        cmd += ["--textures", args.textures]
    if args.foreground:
        cmd += ["--foreground"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    log = run / "train_log.jsonl"
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:  # sample the GPU only once the warm-up steps are done
            gpu.active = any(r["step"] >= args.warmup for r in read_log(log))
            time.sleep(0.5)
        output = proc.stdout.read()
    lines = read_log(log)
    if proc.returncode != 0 or not lines:
        return {"name": name, "error": output[-2000:]}
    rates = stage_rates(lines, args.warmup)
    if not rates:
        return {"name": name, "error": "no log line after the warm-up: make --steps a multiple of --log-every"}
    return {"name": name, "steps_per_s": rates, "wall_s": round(time.perf_counter() - t0, 1), **gpu.summary()}


def stage_rates(lines: list[dict], warmup: int) -> dict[str, float]:
    """steps/s of every loop stage with a log line past ``warmup``, timed from that line to the stage's last."""
    rates = {}
    for stage in dict.fromkeys(r.get("stage", "train") for r in lines):
        own = [r for r in lines if r.get("stage", "train") == stage]
        warm = next((r for r in own if r["step"] >= warmup), None)
        if warm is not None and own[-1]["step"] > warm["step"]:
            rates[stage] = round((own[-1]["step"] - warm["step"]) / (own[-1]["elapsed_s"] - warm["elapsed_s"]), 2)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="diffusionad", choices=["diffusionad", "d3ad", "diad"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--textures")
    ap.add_argument("--foreground", action="store_true")
    ap.add_argument("--presets", nargs="+", default=["s"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--batch-size", type=int, help="default: the preset's")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--baseline-src", type=Path, help="another edgead source tree to time (its own options)")
    ap.add_argument("--baseline-sets", nargs="*", default=["train.mixed_precision=true", "train.num_workers=5"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            args.preset_flag = preset
            if args.baseline_src is not None:
                r = time_one(
                    f"baseline {preset}",
                    args,
                    args.baseline_src.resolve(),
                    args.baseline_sets,
                    Path(tmp) / f"base-{preset}",
                )
                results.append({"preset": preset, "variant": "baseline", **r})
                print(json.dumps(results[-1]), flush=True)
            for v in args.variants:
                r = time_one(f"{preset} {v}", args, here, VARIANTS[v], Path(tmp) / f"{preset}-{v}")
                results.append({"preset": preset, "variant": v, **r})
                print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    report = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "method": args.method,
        "data": args.data,
        "batch_size": args.batch_size,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
