"""``edgead export BUNDLE --engine fp16|fp32``: TensorRT engines built on the device that runs them.

TensorRT 10 (JetPack 6.x): weakly typed network; FP16 through the builder flag. If the engine
then fails validation against ONNX Runtime (overflow in normalisation, softmax or reductions),
it is rebuilt once with those layers pinned to FP32 under OBEY_PRECISION_CONSTRAINTS.
TensorRT 11 (strongly typed only): FP16 is written into the ONNX graph first (FP32 graph inputs
and outputs, normalisation and softmax kept in FP32) and the network is parsed strongly typed.

After each build the engine's layer information is read back; an "fp16" request that yields no
FP16 layer is an error, never a silent FP32 success. Every engine is validated against ONNX
Runtime on the bundle's real sample images before it is recorded in the manifest.

The TensorRT module is passed in (``trt``) so that all of this logic is unit-tested with a fake
TensorRT on machines without a GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import __version__
from ..bundle import Bundle, EngineFile, EngineSet, load_bundle, sha256_file
from ..errors import ExportError
from ..runtime.backends.trt_env import (
    EngineHeader,
    GpuInfo,
    local_gpu,
    trt_major,
    trt_module,
    trt_version,
    write_engine,
)

log = logging.getLogger(__name__)
PINNED_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
FP16_BLOCKED_OPS = ["InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax",
                    "ReduceMean", "ReduceSum", "Pow", "Sqrt"]


def network_flags(trt: Any, major: int) -> int:
    """TensorRT 11 networks are strongly typed; TensorRT 10 keeps the default (weakly typed)."""
    if major >= 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def profile_shapes(spec_shape: list, max_batch: int) -> tuple[tuple, tuple, tuple]:
    dims = [d if isinstance(d, int) else None for d in spec_shape]
    lo = tuple(1 if d is None else d for d in dims)
    hi = tuple(max_batch if d is None else d for d in dims)
    return lo, hi, hi


def obtained_precision(engine_info_json: str) -> tuple[str, int, int]:
    """('fp16' or 'fp32', layers with FP16 outputs, layers) from the engine inspector's JSON."""
    info = json.loads(engine_info_json)
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    half = 0
    for layer in layers:
        formats = " ".join(str(o.get("Format/Datatype", "")) for o in layer.get("Outputs", []))
        if "fp16" in formats.lower() or "half" in formats.lower():
            half += 1
    return ("fp16" if half else "fp32"), half, len(layers)


def pin_layers_fp32(trt: Any, network: Any) -> int:
    pinned = 0
    wanted = {getattr(trt.LayerType, name) for name in PINNED_LAYER_TYPES if hasattr(trt.LayerType, name)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def fp16_onnx(src: Path, dst: Path) -> Path:
    """FP16 weights and arithmetic written into the graph, FP32 I/O (TensorRT 11 path)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=FP16_BLOCKED_OPS)
    onnx.save(model, str(dst))
    return dst


def build_plan(trt: Any, onnx_path: Path, inputs: list, precision: str, workspace_gb: float,
               max_batch: int, pin_fp32: bool = False) -> tuple[bytes, str, int, int]:
    """Serialized engine and the precision read back from it."""
    major = trt_major(trt_version(trt))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        if precision == "fp16" and major >= 11:
            source = fp16_onnx(onnx_path, Path(tmp) / "fp16.onnx")
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if precision == "fp16" and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
        if pin_fp32:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            log.info("pinned %d layers to FP32", pin_layers_fp32(trt, network))
    profile = builder.create_optimization_profile()
    for spec in inputs:
        profile.set_shape(spec.name, *profile_shapes(spec.shape, max_batch))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    plan_bytes = bytes(plan)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
    inspector = engine.create_engine_inspector()
    obtained, half, total = obtained_precision(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    if precision == "fp16" and obtained != "fp16":
        raise ExportError(
            f"{onnx_path.name}: fp16 was requested but TensorRT built an FP32 engine "
            f"(0 of {total} layers in FP16); this GPU may lack fast FP16 — use --engine fp32"
        )
    return plan_bytes, obtained, half, total


def build_engines(bundle_path: str | Path, precision: str, workspace_gb: float = 2.0, max_batch: int = 1,
                  overwrite: bool = False, trt: Any = None, gpu: GpuInfo | None = None,
                  validator=None, sign_key: str | Path | None = None) -> tuple[EngineSet, dict]:
    """Build, validate and record one engine per stage. ``trt``/``gpu``/``validator`` are for tests."""
    if precision not in ("fp16", "fp32"):
        raise ExportError(f"--engine must be one of fp16, fp32; got {precision!r}")
    bundle = load_bundle(bundle_path)
    trt = trt or trt_module()
    version = trt_version(trt)
    gpu = gpu or local_gpu()
    directory = f"engines/{gpu.slug}-trt{version}-{precision}"
    existing = [es for es in bundle.manifest.engines if es.directory == directory]
    if existing and not overwrite:
        raise ExportError(f"{bundle.root}/{directory} exists; pass --overwrite to rebuild it")
    out_dir = bundle.root / directory
    validator = validator or _validate_engines
    report: dict = {"tensorrt": version, "gpu": asdict(gpu), "stages": {}}
    attempts = (False, True) if precision == "fp16" and trt_major(version) < 11 else (False,)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".engines.", dir=bundle.root))
    try:
        for pin in attempts:
            engine_set, report["stages"] = _build_all(trt, bundle, tmp_dir, directory, precision, version, gpu,
                                                      workspace_gb, max_batch, pin)
            try:
                report["validation"] = validator(bundle, tmp_dir, engine_set, precision)
                break
            except ExportError:
                if pin == attempts[-1]:
                    raise
                log.warning("FP16 engines failed validation; rebuilding with normalisation, softmax and "
                            "reductions pinned to FP32")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.rename(out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    bundle.manifest.engines = [es for es in bundle.manifest.engines if es.directory != directory] + [engine_set]
    report["signature_dropped"] = bundle.save_manifest(sign_key)
    return engine_set, report


def _build_all(trt, bundle: Bundle, tmp_dir: Path, directory: str, precision: str, version: str, gpu: GpuInfo,
               workspace_gb: float, max_batch: int, pin: bool) -> tuple[EngineSet, dict]:
    files, stages = [], {}
    for stage in bundle.manifest.stages:
        factor = stage.batch_factor  # graph samples per frame, from the stage contract
        plan, obtained, half, total = build_plan(trt, bundle.path(stage.file), stage.inputs, precision,
                                                 workspace_gb, max_batch * factor, pin_fp32=pin)
        header = EngineHeader(
            method=bundle.method, stage=stage.name,
            inputs=[asdict(s) for s in stage.inputs], outputs=[asdict(s) for s in stage.outputs],
            precision=precision, obtained_precision=f"{obtained} ({half}/{total} layers FP16)",
            tensorrt_version=version, gpu=gpu.name, compute_capability=gpu.compute_capability,
            edgead_version=__version__, onnx_sha256=stage.sha256, max_batch=max_batch * factor,
            extra={"pinned_fp32": pin},
        )
        path = tmp_dir / f"{stage.name}.plan"
        write_engine(path, header, plan)
        files.append(EngineFile(stage.name, f"{directory}/{path.name}", sha256_file(path)))
        stages[stage.name] = {"obtained_precision": header.obtained_precision, "pinned_fp32": pin}
    engine_set = EngineSet(
        directory=directory, gpu=gpu.name, compute_capability=gpu.compute_capability,
        tensorrt_version=version, precision=precision,  # type: ignore[arg-type]
        obtained_precision=", ".join(f"{k}: {v['obtained_precision']}" for k, v in stages.items()),
        max_batch=max_batch, files=files,
    )
    return engine_set, stages


def _validate_engines(bundle: Bundle, engine_dir: Path, engine_set: EngineSet, precision: str) -> dict:
    """Engines (not yet in place) against ONNX Runtime CPU on the bundle's sample images."""
    from ..runtime.backends.tensorrt import TensorRTBackend
    from ..runtime.detector import Detector
    from ..runtime.validate import sample_images, validate

    backends = {}
    for f in engine_set.files:
        entry = bundle.manifest.stage(f.stage)
        backends[f.stage] = TensorRTBackend(engine_dir / Path(f.file).name, entry.inputs, entry.outputs,
                                            bundle_root=bundle.root)
    det = Detector(bundle, backends=backends)
    try:
        report = validate(det, sample_images(bundle), precision=precision)
    finally:
        det.close()
    if not report.passed:
        raise ExportError("TensorRT engines disagree with ONNX Runtime:\n" + report.table())
    return report.to_dict()
