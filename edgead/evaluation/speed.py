"""``edgead benchmark``: latency per part, throughput, peak memory, and the same through PyTorch.

The runtime and (with a training checkpoint) PyTorch eager run the same pipeline code with
different stage engines, alternating run by run so that machine noise hits both alike; the
report gives their ratio rather than absolute times alone. PyTorch is imported only when a
checkpoint is given, and by the caller.
"""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.preprocess import resize
from ..data.io import list_images, read_image
from ..runtime.backends import Backend
from ..runtime.detector import Detector


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec and can be the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux KiB; macOS would need /1024 again


def _frames(det: Detector, images: str | None, n: int) -> list[np.ndarray]:
    h, w = det.image_size
    if images:
        files = list_images(images)
        if not files:
            from ..core.errors import DataError

            raise DataError(f"no images in {images}")
        return [resize(read_image(files[i % len(files)]), det.manifest.preprocess) for i in range(n)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _once(det: Detector, frames: list[np.ndarray]) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    results = det.predict_rgb(frames, keep_image=False)
    wall = (time.perf_counter() - t0) * 1e3
    return wall, {k: v * len(frames) for k, v in results[0].latency_ms.items()}


def _summary(walls: list[float], parts: list[dict[str, float]], batch: int, stages: tuple[str, ...]) -> dict:
    w = np.array(walls)
    keys = parts[0].keys()
    med = {k: float(np.median([p[k] for p in parts])) for k in keys}
    outside = [(wall - sum(p.get(s, 0.0) for s in stages)) / wall for wall, p in zip(walls, parts)]
    total = float(np.median(w))
    return {
        "batch": batch,
        "median_ms": total,
        "p90_ms": float(np.percentile(w, 90)),
        "frames_per_s": batch * 1e3 / total,
        "parts_median_ms": {k: v for k, v in med.items() if k != "total"},
        "outside_stages_share": float(np.median(outside)),
    }


def benchmark(
    bundle: str | Path,
    backend: str = "auto",
    batch: int = 8,
    runs: int = 20,
    warmup: int = 2,
    reference: Callable[[Bundle], dict[str, Backend]] | None = None,
    images: str | None = None,
    progress: bool = False,
    product: str | None = None,
    int8: bool = False,
) -> dict:
    """``reference``: stage engines to time against the runtime's on the same pipeline (the CLI passes
    PyTorch eager from export.torch_backend; this layer never imports it). ``int8``: the bundle's INT8
    graphs timed against its fp32 ones, alternating."""
    from tqdm.auto import tqdm

    det = Detector.load(bundle, backend=backend, product=product)
    stages = tuple(s.name for s in det.manifest.stages)
    frames = _frames(det, images, max(batch, 1))
    for b in sorted({1, batch}):
        _once(det, frames[:b])
    rss_runtime = peak_rss_mb()  # before PyTorch is imported: what a deployment pays
    engines = {"runtime": det}
    if int8:
        engines["int8"] = Detector.load(det.bundle, backend=backend, product=product, int8=True)
    if reference is not None:
        engines["pytorch"] = Detector(det.bundle, backends=reference(det.bundle), product=product)
    report: dict = {
        "bundle": str(bundle),
        "method": det.method,
        "backend": det.backend_name,
        "image_size": list(det.image_size),
        "runs": runs,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "input": images or "random uint8 frames",
    }
    for b in sorted({1, batch}):
        fr = frames[:b]
        walls: dict[str, list[float]] = {k: [] for k in engines}
        parts: dict[str, list[dict]] = {k: [] for k in engines}
        for _ in range(warmup):
            for e in engines.values():
                _once(e, fr)
        for _ in tqdm(range(runs), disable=not progress, desc=f"batch {b}", unit="run"):
            for name, e in engines.items():  # alternate: noise hits both engines alike
                wall, p = _once(e, fr)
                walls[name].append(wall)
                parts[name].append(p)
        for name in engines:
            report.setdefault(name, {})[f"batch{b}"] = _summary(walls[name], parts[name], b, stages)
        for other in ("pytorch", "int8"):
            if other in engines:
                report.setdefault(f"{other}_over_runtime", {})[f"batch{b}"] = (
                    report[other][f"batch{b}"]["median_ms"] / report["runtime"][f"batch{b}"]["median_ms"]
                )
    report["peak_rss_mb_runtime"] = rss_runtime
    report["peak_rss_mb_process"] = peak_rss_mb()
    for e in engines.values():
        e.close()
    return report


def format_report(r: dict) -> str:
    lines = [f"{r['method']} via {r['backend']}, image {r['image_size'][0]}x{r['image_size'][1]}, {r['runs']} runs"]
    lines.append(f"{'engine':<10}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'frames/s':>10}{'outside stages':>16}")
    for name in ("runtime", "int8", "pytorch"):
        for s in r.get(name, {}).values():
            lines.append(
                f"{name:<10}{s['batch']:>6}{s['median_ms']:>11.1f}{s['p90_ms']:>9.1f}"
                f"{s['frames_per_s']:>10.2f}{s['outside_stages_share']:>15.1%}"
            )
    for name in ("runtime", "int8"):
        for key, s in r.get(name, {}).items():
            parts = ", ".join(f"{k} {v:.1f}" for k, v in s["parts_median_ms"].items())
            lines.append(f"{name} {key} parts (ms): {parts}")
    for key, v in r.get("pytorch_over_runtime", {}).items():
        lines.append(f"PyTorch eager / runtime at {key}: {v:.2f}x")
    for key, v in r.get("int8_over_runtime", {}).items():
        lines.append(f"INT8 / fp32 time at {key}: {v:.2f}x")
    lines.append(
        f"peak resident memory: runtime alone {r['peak_rss_mb_runtime']:.0f} MB, "
        f"whole process {r['peak_rss_mb_process']:.0f} MB"
    )
    return "\n".join(lines)
