"""DiffusionAD full-pipeline speed on a CUDA GPU with PyTorch (the stand-in for TensorRT).

Pipeline per frame: uint8 HxWx3 host frame -> GPU -> normalise -> fixed-noise x_ts, x_tb ->
denoiser (batch 2B) -> norm-guided step -> segmenter -> top-50 mean score; score and mask map
back to the host. Variants: fp32 eager, fp16 eager, fp16 + CUDA graph. Also per-stage times
(CUDA events) and the fp16-vs-fp32 score difference on real images.

    python benchmarks/gpu_speed.py [--run RUN_DIR] [--preset s] [--images DIR] --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from edgead.core.config import load_config
from edgead.core.preprocess import Preprocess, resize
from edgead.data.io import list_images, read_image
from edgead.methods.diffusionad.networks import (
    build_denoiser,
    build_segmenter,
    resolve_network,
)
from edgead.methods.diffusionad.train import DiffusionADModel
from edgead.methods.diffusionad.train import load_model as load_diffusionad


def build_model(run: str | None, preset: str, size: int) -> DiffusionADModel:
    if run:
        return load_diffusionad(run)
    cfg = load_config(None, [f"model.preset={preset}", f"data.image_size={size}"])
    net = resolve_network(cfg.model, size)
    return DiffusionADModel(build_denoiser(net, size), build_segmenter(net), net, cfg).eval()


class Pipeline(torch.nn.Module):
    def __init__(self, model: DiffusionADModel, batch: int, dtype: torch.dtype):
        super().__init__()
        self.m = model
        size = model.config.data.image_size
        g = torch.Generator().manual_seed(0)
        self.register_buffer("noise_s", torch.randn(1, 3, size, size, generator=g))
        self.register_buffer("noise_b", torch.randn(1, 3, size, size, generator=g))
        d = model.config.diffusionad
        self.register_buffer("t", torch.tensor([float(d.t_s)] * batch + [float(d.t_b)] * batch))
        self.sch = model.scheduler
        self.dtype, self.top_k = dtype, d.top_k

    def forward(self, frames_u8: torch.Tensor):
        x = frames_u8.permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0
        b = x.shape[0]
        x_ts, x_tb = self.sch.noised_inputs(x, self.noise_s.to(self.dtype), self.noise_b.to(self.dtype))
        eps = self.m.denoiser(torch.cat([x_ts, x_tb]), self.t.to(self.dtype)).sample
        x0_hat = self.sch.step(x_ts, x_tb, eps[:b], eps[b:])
        mask = self.m.segmenter(x, x0_hat)[:, 0].float()
        score = mask.flatten(1).topk(self.top_k, dim=1).values.mean(1)
        return score, mask


def timed(fn, runs: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    a = np.array(times)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "runs": runs}


def run_variant(model, frames_host: np.ndarray, dtype, graph: bool, runs: int) -> dict:
    dev = torch.device("cuda")
    b = frames_host.shape[0]
    pipe = Pipeline(model, b, dtype).to(dev)
    pipe.m.denoiser.to(dev, dtype)
    pipe.m.segmenter.to(dev, dtype)
    host = torch.from_numpy(frames_host).pin_memory()
    static_in = torch.empty(host.shape, dtype=torch.uint8, device=dev)
    score_host = torch.empty(b, pin_memory=True)
    mask_host = torch.empty((b, *frames_host.shape[1:3]), pin_memory=True)
    with torch.no_grad():
        if graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    static_in.copy_(host, non_blocking=True)
                    pipe(static_in)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_score, static_mask = pipe(static_in)

            def step():
                static_in.copy_(host, non_blocking=True)
                g.replay()
                score_host.copy_(static_score, non_blocking=True)
                mask_host.copy_(static_mask, non_blocking=True)
                torch.cuda.current_stream().synchronize()
        else:

            def step():
                static_in.copy_(host, non_blocking=True)
                score, mask = pipe(static_in)
                score_host.copy_(score, non_blocking=True)
                mask_host.copy_(mask, non_blocking=True)
                torch.cuda.current_stream().synchronize()

        r = timed(step, runs)
    r["fps"] = b * 1e3 / r["median_ms"]
    r["batch"] = b
    return r


def stage_times(model, size: int, dtype, runs: int = 50) -> dict:
    dev = torch.device("cuda")
    den, seg = model.denoiser.to(dev, dtype), model.segmenter.to(dev, dtype)
    x = torch.randn(2, 3, size, size, device=dev, dtype=dtype)
    t = torch.tensor([200.0, 400.0], device=dev, dtype=dtype)
    out = {}
    with torch.no_grad():
        for name, fn in (
            ("denoiser_step(batch 2)", lambda: den(x, t)),
            ("segmenter(batch 1)", lambda: seg(x[:1], x[1:])),
        ):
            for _ in range(10):
                fn()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ts = []
            for _ in range(runs):
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                ts.append(e0.elapsed_time(e1))
            out[name] = float(np.median(ts))
    return out


def fp16_agreement(model, images: list[np.ndarray]) -> dict:
    dev = torch.device("cuda")
    frames = torch.from_numpy(np.stack(images)).to(dev)
    res = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.float16):
            pipe = Pipeline(model, len(images), dtype).to(dev)
            pipe.m.denoiser.to(dev, dtype)
            pipe.m.segmenter.to(dev, dtype)
            res[str(dtype)] = pipe(frames)[0].float().cpu().numpy()
    a, b = res["torch.float32"], res["torch.float16"]
    return {
        "images": len(images),
        "max_abs_score_diff": float(np.abs(a - b).max()),
        "score_range": [float(a.min()), float(a.max())],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run")
    ap.add_argument("--preset", default="s")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", help="folder of real images for the fp16 check")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    model = build_model(a.run, a.preset, a.size)
    size = model.config.data.image_size
    rng = np.random.default_rng(0)
    if a.images:
        imgs = [resize(read_image(p), Preprocess.for_size(size)) for p in list_images(a.images)[:8]]
    else:
        imgs = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(8)]
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "preset": model.config.model.preset,
        "image_size": size,
        "params_denoiser_M": sum(p.numel() for p in model.denoiser.parameters()) / 1e6,
        "params_segmenter_M": sum(p.numel() for p in model.segmenter.parameters()) / 1e6,
        "date": time.strftime("%Y-%m-%d"),
    }
    report["fp16_vs_fp32"] = fp16_agreement(model, imgs)
    report["stage_ms_fp16"] = stage_times(model, size, torch.float16)
    report["stage_ms_fp32"] = stage_times(model, size, torch.float32)
    variants = {}
    for batch in (1, 8):
        frames = np.stack([imgs[i % len(imgs)] for i in range(batch)])
        for name, dtype, graph in (
            ("fp32_eager", torch.float32, False),
            ("fp16_eager", torch.float16, False),
            ("fp16_cudagraph", torch.float16, True),
        ):
            variants[f"{name}_b{batch}"] = run_variant(model, frames, dtype, graph, a.runs)
            print(name, batch, variants[f"{name}_b{batch}"], flush=True)
    report["pipeline"] = variants
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
