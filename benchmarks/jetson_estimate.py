"""A Jetson estimate on paper: each stage's work (multiply-accumulates, weights and activations read and written)
counted from the bundle's own ONNX graphs, the calls a frame makes, and Orin's published rates, so a buyer knows
which module a line needs before one is on the desk. Nothing here ran on a Jetson.

    python benchmarks/jetson_estimate.py tire-patchcore.edgead tire-d3ad.edgead hz-diad.edgead \\
        --cpu-ms benchmarks/results/jetson/cpu_rest_ms.json --out benchmarks/results/jetson

A stage takes max(compute, memory) + launches: compute = 2 MAC / (the module's dense tensor rate x efficiency),
memory = bytes / (bandwidth x 0.7), launches = the graph's compute and normalisation nodes x 8 us. Efficiency is
a range, not a measurement: 30% (large-batch convolution networks under TensorRT) to 15% (batch 1). The numpy
part of a frame (kNN search, prior, orchestration, pre- and post-processing; ``--cpu-ms``, measured on this
machine's 2 x86 cores) is taken as 1.5x slower on Orin's Cortex-A78AE cores.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edgead import load_bundle

# GA10B: 128 CUDA cores and 4 tensor cores per SM; dense rates per SM and clock from AGX Orin 64GB's published
# 170 sparse INT8 TOPS for the GPU (85 dense) at 16 SMs x 1.3 GHz: 2,048 INT8 ops and 1,024 FP16 ops.
INT8_OPS_PER_SM_CLOCK = 85.2e12 / (16 * 1.3e9)
MODULES = {  # SMs, GPU clock (Hz), memory bandwidth (B/s): NVIDIA's module data sheets
    "AGX Orin 64GB": (16, 1.3e9, 204.8e9),
    "Orin NX 16GB": (8, 0.918e9, 102.4e9),
    "Orin Nano 8GB (Super)": (8, 1.02e9, 102.0e9),
}
EFFICIENCY = (0.30, 0.15)
BANDWIDTH_EFFICIENCY = 0.7
LAUNCH_S = 8e-6
CPU_SLOWDOWN = 1.5
LAUNCHED = {
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "GroupNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "BatchNormalization",
    "Resize",
    "Softmax",
}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape in one call at batch 1: the graph run by ONNX Runtime on zeros with each intermediate
    tensor made an output (static inference leaves the shapes after dynamic pads unknown)."""
    import onnxruntime as ort

    inferred = shape_inference.infer_shapes(model)
    known = {o.name for o in model.graph.output}
    for v in inferred.graph.value_info:
        if v.name not in known and v.type.tensor_type.elem_type:
            out = model.graph.output.add()
            out.name = v.name
            out.type.tensor_type.elem_type = v.type.tensor_type.elem_type
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, np.int64 if "int64" in i.type else np.float32)
    names = [o.name for o in session.get_outputs()]
    return {n: list(v.shape) for n, v in zip(names, session.run(names, feeds))}


def stage_work(path: Path) -> dict:
    """Multiply-accumulates, weights, activation elements and launched nodes of one call at batch 1."""
    model = onnx.load(str(path))
    shapes = _shapes(model)
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    shapes.update({k: list(v.shape) for k, v in inits.items()})
    macs, launched, activations = 0, 0, 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in LAUNCHED:
            launched += 1
        if out is not None and node.op_type in LAUNCHED:  # element-wise work fuses into these (TensorRT)
            activations += math.prod(out)
        w = shapes.get(node.input[1]) if len(node.input) > 1 else None
        if out is None or w is None:
            continue
        if node.op_type == "Conv":
            macs += math.prod(out) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            x = shapes.get(node.input[0])
            macs += (math.prod(x) if x else 0) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            if a:
                macs += math.prod(out) * a[-1]
    weights = sum(v.size for v in inits.values() if v.dtype.kind == "f")
    return {"gmac": macs / 1e9, "weights_m": weights / 1e6, "activations_m": activations / 1e6, "launched": launched}


def calls_per_frame(method: str, params) -> dict[str, int]:
    if method == "patchcore":
        return {"feature_extractor": 1}
    if method == "diffusionad":
        return {"denoiser_step": 2, "segmenter": 1}  # x_ts and x_tb
    steps = int(params.num_steps)  # the most a frame takes: D3AD's prior may start lower
    calls = {"encoder": 1, "denoiser_step": steps, "decoder": 1, "feature_extractor": 2}
    if method == "diad":
        calls["hint_encoder"] = 1
    return calls


def estimate(work: dict, calls: dict[str, int], module: tuple, precision: str, efficiency: float) -> float:
    sms, clock, bandwidth = module
    rate = INT8_OPS_PER_SM_CLOCK * sms * clock * (1.0 if precision == "int8" else 0.5)
    byte = 1 if precision == "int8" else 2
    seconds = 0.0
    for stage, n in calls.items():
        w = work[stage]
        compute = 2 * w["gmac"] * 1e9 / (rate * efficiency)
        memory = (w["weights_m"] + 2 * w["activations_m"]) * 1e6 * byte / (bandwidth * BANDWIDTH_EFFICIENCY)
        seconds += n * (max(compute, memory) + w["launched"] * LAUNCH_S)
    return seconds * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--cpu-ms", type=Path, help="JSON {bundle file name: ms of the numpy part a frame, here}")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    cpu_ms = json.loads(a.cpu_ms.read_text()) if a.cpu_ms else {}
    report, lines = {"assumptions": __doc__.split("\n\n")[2].strip(), "bundles": {}}, []
    lines += [
        "| bundle | stage | calls a frame | GMAC a call | weights (M) | activations (M) | launched nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for path in a.bundles:
        bundle = load_bundle(path)
        m = bundle.manifest
        calls = calls_per_frame(m.method, m.params)
        work = {s: stage_work(bundle.stage_path(s)) for s in calls}
        for s, n in calls.items():
            w = work[s]
            lines.append(
                f"| {path.name} | {s} | {n} | {w['gmac']:.2f} | {w['weights_m']:.2f} | "
                f"{w['activations_m']:.1f} | {w['launched']} |"
            )
        gmac_frame = sum(n * work[s]["gmac"] for s, n in calls.items())
        rest = float(cpu_ms.get(path.name, 0.0)) * CPU_SLOWDOWN
        per_module = {}
        for name, module in MODULES.items():
            for precision in ("fp16", "int8"):
                ms = [estimate(work, calls, module, precision, e) + rest for e in EFFICIENCY]
                per_module[f"{name} {precision}"] = {"ms": ms, "frames_per_s": [1e3 / x for x in ms]}
        report["bundles"][path.name] = {
            "method": m.method,
            "calls": calls,
            "work": work,
            "gmac_per_frame": gmac_frame,
            "cpu_ms_here": cpu_ms.get(path.name),
            "estimate": per_module,
        }
        rows.append((path.name, m.method, gmac_frame, per_module))
    lines += [
        "",
        "| bundle | GMAC a frame | " + " | ".join(f"{k} fp16 / int8 (frames/s)" for k in MODULES) + " |",
        "|---|---|" + "---|" * len(MODULES),
    ]
    for name, method, gmac, per_module in rows:
        cells = []
        for k in MODULES:
            f16, i8 = per_module[f"{k} fp16"]["frames_per_s"], per_module[f"{k} int8"]["frames_per_s"]
            cells.append(f"{f16[1]:.0f}–{f16[0]:.0f} / {i8[1]:.0f}–{i8[0]:.0f}")
        lines.append(f"| {name} ({method}) | {gmac:.1f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "jetson_estimate.json").write_text(json.dumps(report, indent=2) + "\n")
        (a.out / "jetson_estimate.md").write_text(table + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
