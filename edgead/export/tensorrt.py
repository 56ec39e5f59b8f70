"""``edgead export BUNDLE --engine fp16|fp32``: TensorRT engines for every stage, in three flavours.

TensorRT 10 (JetPack 6.x): weakly typed network; FP16 through the builder flag. If the engines
then fail validation against ONNX Runtime (overflow in normalisation, softmax or reductions),
they are rebuilt once with those layers pinned to FP32 under OBEY_PRECISION_CONSTRAINTS.
TensorRT 11 and TensorRT for RTX (strongly typed only): FP16 is written into the ONNX graph
first (FP32 graph inputs and outputs, normalisation and softmax kept in FP32).

TensorRT for RTX builds ahead of time, also on a build server without a GPU: for the compute
capabilities given with ``--sm`` (e.g. 86,89,120), for the GPU present when there is one, or
else the builder's portable default (Ampere and newer). Its engines are then checked on the
device (``edgead validate``), since they cannot run where they were built.

After each build the precision actually obtained is read back (TensorRT 10/11: the engine
inspector; TensorRT-RTX: the layer table of the builder's verbose log, since without a GPU the
engine cannot be deserialised); an "fp16" request that yields no FP16 layer is an error, never a
silent FP32 success. Engines that can run here are validated against ONNX Runtime on the bundle's
real sample images before they are recorded in the manifest.

The TensorRT flavour is passed in (``trt``) so that the logic is unit-tested with a fake TensorRT;
real TensorRT-RTX builds run in every CI run.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.bundle import Bundle, load_bundle, sha256_file
from ..core.errors import BackendError, ExportError
from ..core.manifest import EngineFile, EngineSet
from ..core.outputs import exclusive, new_temp_dir
from ..core.version import __version__
from ..runtime.backends.trt_env import (
    RTX_TARGETS,
    EngineHeader,
    GpuInfo,
    TensorRT,
    local_gpu,
    tensorrt,
    write_engine,
)

log = logging.getLogger(__name__)
PINNED_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
FP16_BLOCKED_OPS = [
    "InstanceNormalization",
    "GroupNormalization",
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
]


def network_flags(trt: TensorRT) -> int:
    """Strongly typed networks for TensorRT 11 and TensorRT-RTX; TensorRT 10 keeps the default."""
    if trt.strongly_typed:
        return 1 << int(trt.module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def profile_shapes(spec_shape: list, max_batch: int) -> tuple[tuple, tuple, tuple]:
    dims = [d if isinstance(d, int) else None for d in spec_shape]
    lo = tuple(1 if d is None else d for d in dims)
    hi = tuple(max_batch if d is None else d for d in dims)
    return lo, hi, hi


def _is_half(text: str) -> bool:
    t = text.lower()
    return "fp16" in t or "half" in t


def _is_int8(text: str) -> bool:
    return "int8" in text.lower()


def obtained_precision(engine_info_json: str, int8: bool = False) -> tuple[str, int, int]:
    """('fp16' or 'fp32', layers with FP16 outputs, layers) from the engine inspector's JSON; with ``int8``,
    ('int8', layers with INT8 outputs, layers) when any has them.

    TensorRT 10 writes each output's type into "Format/Datatype"; TensorRT 11 has separate
    "DataType"/"Datatype" and "Format" fields. Any of them is read.
    """
    info = json.loads(engine_info_json)
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    return _precision_of(
        [
            " ".join(
                str(o.get(k, ""))
                for o in layer.get("Outputs", [])
                if isinstance(o, dict)
                for k in ("Format/Datatype", "DataType", "Datatype")
            )
            for layer in layers
        ],
        int8,
    )


def precision_from_build_log(messages: list[str], int8: bool = False) -> tuple[str, int, int]:
    """The same read-back from the layer table a DETAILED build writes to its verbose log (TensorRT-RTX)."""
    table = next((m for m in reversed(messages) if m.startswith("Layers:")), None)
    if table is None:
        raise ExportError("the TensorRT build log has no layer table (profiling verbosity DETAILED was not applied)")
    layers = [line for line in table.splitlines() if line.startswith("Name:")]
    return _precision_of(
        [" ".join(re.findall(r"Datatype: (\w+)", line.partition("Outputs:")[2])) for line in layers], int8
    )


def _precision_of(output_types: list[str], int8: bool) -> tuple[str, int, int]:
    """(precision, layers in it, layers) from each layer's output types, however the build reported them."""
    quant = sum(map(_is_int8, output_types))
    if int8 and quant:
        return "int8", quant, len(output_types)
    half = sum(map(_is_half, output_types))
    return ("fp16" if half else "fp32"), half, len(output_types)


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
    """FP16 weights and arithmetic written into the graph, FP32 I/O (strongly typed flavours)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=FP16_BLOCKED_OPS)
    onnx.save(model, str(dst))
    return dst


def parse_targets(sm: str | None) -> list[str]:
    """'86,89,120' -> ['8.6', '8.9', '12.0'] (TensorRT-RTX target compute capabilities)."""
    if not sm:
        return []
    out = []
    for item in sm.split(","):
        item = item.strip().lower().removeprefix("sm").replace(".", "")
        cc = f"{item[:-1]}.{item[-1]}" if item.isdigit() and len(item) >= 2 else None
        if cc not in RTX_TARGETS:
            raise ExportError(
                f"--sm {sm}: {item!r} is not a compute capability TensorRT-RTX builds for; "
                f"choose from {', '.join(t.replace('.', '') for t in RTX_TARGETS)}"
            )
        out.append(cc)
    return sorted(set(out), key=RTX_TARGETS.index)


def capture_logger(trt: Any):
    """A TensorRT logger that keeps every message (the verbose layer table) and passes warnings on."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg):
            self.messages.append(msg)
            if severity <= trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return Logger()


def build_plan(
    trt: TensorRT,
    onnx_path: Path,
    inputs: list,
    precision: str,
    workspace_gb: float,
    max_batch: int,
    pin_fp32: bool = False,
    targets: list[str] | None = None,
    current_gpu: bool = False,
) -> tuple[bytes, str, int, int]:
    """Serialized engine and the precision read back from it."""
    m = trt.module
    rtx = trt.flavour == "rtx"
    logger = capture_logger(m) if rtx else m.Logger(m.Logger.WARNING)
    builder = m.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = m.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        if precision == "fp16" and trt.strongly_typed:
            source = fp16_onnx(onnx_path, Path(tmp) / "fp16.onnx")
        if not parser.parse_from_file(str(source)):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(m.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.profiling_verbosity = m.ProfilingVerbosity.DETAILED
    if precision == "int8" and not trt.strongly_typed:
        config.set_flag(m.BuilderFlag.INT8)  # explicit quantisation: the graph's Q/DQ pairs set the scales
    if precision == "fp16" and not trt.strongly_typed:
        config.set_flag(m.BuilderFlag.FP16)
        if pin_fp32:
            config.set_flag(m.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            log.info("pinned %d layers to FP32", pin_layers_fp32(m, network))
    if rtx:
        if targets:
            config.num_compute_capabilities = len(targets)
            for i, cc in enumerate(targets):
                _check(
                    config.set_compute_capability(getattr(m.ComputeCapability, "SM" + cc.replace(".", "")), i),
                    f"TensorRT-RTX refused compute capability {cc}",
                )
        elif current_gpu:
            config.num_compute_capabilities = 1
            _check(
                config.set_compute_capability(m.ComputeCapability.CURRENT, 0),
                "TensorRT-RTX cannot target the current GPU",
            )
    profile = builder.create_optimization_profile()
    for spec in inputs:
        profile.set_shape(spec.name, *profile_shapes(spec.shape, max_batch))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    plan_bytes = bytes(plan)
    if rtx:
        obtained, half, total = precision_from_build_log(logger.messages, int8=precision == "int8")
    else:
        engine = m.Runtime(logger).deserialize_cuda_engine(plan_bytes)
        if engine is None:
            raise ExportError(f"TensorRT could not load the engine it built for {onnx_path.name}")
        inspector = engine.create_engine_inspector()
        obtained, half, total = obtained_precision(
            inspector.get_engine_information(m.LayerInformationFormat.JSON), int8=precision == "int8"
        )
    if precision == "int8" and obtained != "int8":
        raise ExportError(f"{onnx_path.name}: int8 was requested but TensorRT built no INT8 layer (0 of {total})")
    if precision == "fp16" and obtained != "fp16":
        raise ExportError(
            f"{onnx_path.name}: fp16 was requested but TensorRT built an FP32 engine "
            f"(0 of {total} layers in FP16); this GPU may lack fast FP16 — use --engine fp32"
        )
    return plan_bytes, obtained, half, total


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ExportError(message)


def _engine_directory(trt: TensorRT, gpu: GpuInfo | None, targets: list[str], precision: str) -> str:
    if trt.flavour == "rtx":
        where = "-".join("sm" + t.replace(".", "") for t in targets) or (f"current-{gpu.slug}" if gpu else "portable")
        return f"engines/rtx{trt.version}-{where}-{precision}"
    return f"engines/{gpu.slug}-trt{trt.version}-{precision}"


def build_engines(
    bundle_path: str | Path,
    precision: str,
    workspace_gb: float = 2.0,
    max_batch: int = 1,
    overwrite: bool = False,
    trt: Any = None,
    gpu: GpuInfo | None = None,
    validator=None,
    sign_key: str | Path | None = None,
    flavour: str = "auto",
    sm: str | None = None,
    calibration: str | Path | None = None,
) -> tuple[EngineSet, dict]:
    """Build, validate where possible and record one engine per stage.

    ``trt`` (a ``TensorRT`` or a bare module, taken as the TensorRT flavour), ``gpu`` and ``validator``
    are for tests; ``flavour`` is auto, tensorrt or rtx; ``sm`` lists TensorRT-RTX targets. ``int8``:
    the stages of the bundle's INT8 set from QDQ graphs calibrated on ``calibration`` (good images),
    the others in fp32.
    """
    if precision not in ("fp16", "fp32", "int8"):
        raise ExportError(f"--engine must be one of fp16, fp32, int8; got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ExportError("--engine int8 needs --calibration GOOD_IMAGES (the activation ranges of its QDQ graphs)")
    with exclusive(bundle_path, "export --engine"):  # the manifest is read, extended and written as one step
        return _build_engines(
            load_bundle(bundle_path),
            precision,
            workspace_gb,
            max_batch,
            overwrite,
            trt,
            gpu,
            validator,
            sign_key,
            flavour,
            sm,
            calibration,
        )


def _build_engines(
    bundle: Bundle,
    precision: str,
    workspace_gb: float,
    max_batch: int,
    overwrite: bool,
    trt: Any,
    gpu: GpuInfo | None,
    validator,
    sign_key: str | Path | None,
    flavour: str,
    sm: str | None,
    calibration: str | Path | None = None,
) -> tuple[EngineSet, dict]:
    trt = trt if isinstance(trt, TensorRT) else TensorRT("tensorrt", trt) if trt is not None else tensorrt(flavour)
    targets = parse_targets(sm) if trt.flavour == "rtx" else []
    if sm and trt.flavour != "rtx":
        raise ExportError("--sm chooses TensorRT-RTX targets; TensorRT engines are built for the GPU they run on")
    if gpu is None:
        try:
            gpu = local_gpu()
        except Exception as exc:  # no CUDA here: only TensorRT-RTX builds ahead of time
            if trt.flavour != "rtx":
                raise BackendError(
                    f"building {trt.label} engines needs the GPU that will run them ({exc}); "
                    "TensorRT for RTX can build on a machine without one (--trt rtx)"
                ) from None
            gpu = None
    directory = _engine_directory(trt, gpu, targets, precision)
    existing = [es for es in bundle.manifest.engines if es.directory == directory]
    if existing and not overwrite:
        raise ExportError(f"{bundle.root}/{directory} exists; pass --overwrite to rebuild it")
    out_dir = bundle.root / directory
    can_run = gpu is not None and (trt.flavour != "rtx" or not targets or gpu.compute_capability in targets)
    validator = validator or (_validate_engines if can_run else None)
    report: dict = {
        "flavour": trt.flavour,
        "tensorrt": trt.version,
        "gpu": asdict(gpu) if gpu else None,
        "targets": targets,
        "stages": {},
    }
    attempts = (False, True) if precision == "fp16" and not trt.strongly_typed else (False,)
    tmp_dir = new_temp_dir(bundle.root, "writing")  # beside the bundle, never an unlisted folder inside it
    qdq_dir = Path(tempfile.mkdtemp(prefix="edgead-qdq-")) if precision == "int8" else None
    try:
        sources: dict[str, Path] = {}
        if qdq_dir is not None:
            from .quantize import tensorrt_graphs

            sources = tensorrt_graphs(bundle, calibration, qdq_dir)
            report["int8_stages"] = sorted(sources)
        for pin in attempts:
            engine_set, report["stages"] = _build_all(
                trt, bundle, tmp_dir, directory, precision, gpu, targets, workspace_gb, max_batch, pin, sources
            )
            if validator is None:
                engine_set.validated = False
                report["validation"] = (
                    "not run: no GPU that can run these engines here; on the device run "
                    f"edgead validate {bundle.root} --backend tensorrt"
                )
                break
            try:
                report["validation"] = validator(bundle, tmp_dir, engine_set, precision)
                break
            except ExportError:
                if pin == attempts[-1]:
                    raise
                log.warning(
                    "FP16 engines failed validation; rebuilding with normalisation, softmax and "
                    "reductions pinned to FP32"
                )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.rename(out_dir)
    finally:
        if qdq_dir is not None:
            shutil.rmtree(qdq_dir, ignore_errors=True)
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    bundle.manifest.engines = [es for es in bundle.manifest.engines if es.directory != directory] + [engine_set]
    report["signature_dropped"] = bundle.save_manifest(sign_key)
    return engine_set, report


def _build_all(
    trt: TensorRT,
    bundle: Bundle,
    tmp_dir: Path,
    directory: str,
    precision: str,
    gpu: GpuInfo | None,
    targets: list[str],
    workspace_gb: float,
    max_batch: int,
    pin: bool,
    sources: dict[str, Path] | None = None,
) -> tuple[EngineSet, dict]:
    """``sources``: stages built from another graph (the INT8 QDQ ones); the others from the bundle's."""
    import time

    files, stages = [], {}
    for stage in bundle.manifest.stages:
        factor = stage.batch_factor  # graph samples per frame, from the stage contract
        t0 = time.perf_counter()
        source = (sources or {}).get(stage.name)
        stage_precision = "fp32" if precision == "int8" and source is None else precision  # kept fp32 by the INT8 set
        plan, obtained, half, total = build_plan(
            trt,
            source or bundle.path(stage.file),
            stage.inputs,
            stage_precision,
            workspace_gb,
            max_batch * factor,
            pin_fp32=pin,
            targets=targets,
            current_gpu=gpu is not None,
        )
        seconds = time.perf_counter() - t0
        header = EngineHeader(
            method=bundle.method,
            stage=stage.name,
            inputs=[asdict(s) for s in stage.inputs],
            outputs=[asdict(s) for s in stage.outputs],
            precision=precision,
            obtained_precision=f"{obtained} ({half}/{total} layers {'INT8' if obtained == 'int8' else 'FP16'})",
            tensorrt_version=trt.version,
            gpu=gpu.name if gpu and not targets else "",
            compute_capability=gpu.compute_capability if gpu and not targets else "",
            edgead_version=__version__,
            onnx_sha256=stage.sha256,
            max_batch=max_batch * factor,
            extra={"pinned_fp32": pin},
            flavour=trt.flavour,
            targets=targets,
        )
        path = tmp_dir / f"{stage.name}.plan"
        write_engine(path, header, plan)
        files.append(EngineFile(stage.name, f"{directory}/{path.name}", sha256_file(path)))
        stages[stage.name] = {
            "obtained_precision": header.obtained_precision,
            ("int8_layers" if obtained == "int8" else "fp16_layers"): half,
            "layers": total,
            "build_seconds": round(seconds, 2),
            "pinned_fp32": pin,
            "megabytes": round(path.stat().st_size / 1e6, 2),
        }
    engine_set = EngineSet(
        directory=directory,
        gpu=header.gpu,
        compute_capability=header.compute_capability,
        tensorrt_version=trt.version,
        precision=precision,  # type: ignore[arg-type]
        obtained_precision=", ".join(f"{k}: {v['obtained_precision']}" for k, v in stages.items()),
        max_batch=max_batch,
        files=files,
        flavour=trt.flavour,
        targets=targets,
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
        backends[f.stage] = TensorRTBackend(
            engine_dir / Path(f.file).name,
            entry.inputs,
            entry.outputs,
            bundle_root=bundle.root,
            flavour=engine_set.flavour,
        )
    det = Detector(bundle, backends=backends, require_calibration=False)
    try:
        report = validate(det, sample_images(bundle), precision=precision)
    finally:
        det.close()
    if not report.passed:
        raise ExportError("TensorRT engines disagree with ONNX Runtime:\n" + report.table())
    return report.to_dict()
