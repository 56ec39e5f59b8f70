"""The whole path from Python: train, export, build engines, quantize, evaluate, calibrate, serve a repository.

    from edgead import api

    run = api.train("data/tire", method="d3ad", preset="s", out="runs/tire", max_minutes=15)
    bundle = api.export(run.run_dir, "tire.edgead")
    report = api.evaluate(bundle.bundle, "data/tire")
    print(report.image_auroc, report.aupro)
    api.calibrate(bundle.bundle, ["line_good_parts/"], target_frr=0.005)

Every function returns a typed result and takes ``progress=``, a callable that receives ``edgead.core.progress.
Progress`` events (task, done, total, detail) while it works; errors are ``edgead.core.errors.EdgeadError``
subclasses with one-line messages. The ``edgead`` command is a thin layer over these functions. Training,
export and quantization need ``pip install "edgead[train]"``; evaluation and calibration run without PyTorch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.errors import ConfigError, require
from .core.progress import ProgressCallback, listening, on_terminal

__all__ = [
    "CalibrationResult",
    "EngineResult",
    "EvaluationResult",
    "ExportResult",
    "QuantizeResult",
    "TrainResult",
    "build_engines",
    "calibrate",
    "evaluate",
    "export",
    "quantize",
    "train",
    "triton_repository",
]


# --------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    """What the method's trainer reports: steps per stage, seconds, budget used, ..."""


def _overrides(pairs: dict[str, Any], extra: Sequence[str]) -> list[str]:
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pairs.items() if v is not None] + list(
        extra
    )


def train(
    data: str | Path | Sequence[str | Path] | None,
    out: str | Path,
    method: str | None = None,
    preset: str | None = None,
    image_size: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    max_minutes: float | None = None,
    fill_budget: bool | None = None,
    textures: str | Path | None = None,
    foreground: bool | None = None,
    device: str | None = None,
    resume: bool = False,
    allow_changes: bool = False,
    stage: str = "all",
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``method`` on the anomaly-free images of ``data`` (several folders: one model for several products,
    for methods that serve several) into the run folder ``out``. ``resume`` continues a run with its own
    configuration (``allow_changes``: with other data or options, recorded in its history); ``stage`` trains
    one stage of a staged method; ``overrides``: any ``section.key=value``."""
    require("torch", 'pip install "edgead[train]"', "Training")
    from .core.config import load_config
    from .training import train as train_method
    from .training.checkpoint import resume_config

    paths = None if data is None else [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    given = _overrides(
        {
            "method": method,
            "data.path": None if not paths else paths[0] if len(paths) == 1 else paths,
            "model.preset": preset,
            "data.image_size": image_size,
            "train.steps": steps,
            "train.batch_size": batch_size,
            "train.max_minutes": max_minutes,
            "train.fill_budget": fill_budget,
            "data.textures": None if textures is None else str(textures),
            "data.foreground": foreground,
            "train.device": device,
        },
        overrides,
    )
    existing = (Path(out) / "config.yaml").is_file()
    if resume or (stage != "all" and existing):  # the run's own configuration, as it was trained
        if config:
            raise ConfigError("a run is continued with its own configuration; leave out the configuration file")
        cfg = resume_config(out, given, allow_changes)
    else:
        if allow_changes:
            raise ConfigError("--allow-changes goes with --resume (or --stage on an existing run)")
        cfg = load_config(config, given)
        if method is None and not _sets_method(config, overrides):
            cfg.method = default_method(cfg.train.device)
    with listening(progress):
        summary = train_method(cfg, out, resume=resume, progress=True, stage=stage)
    return TrainResult(Path(out), summary)


CPU_DEFAULT_METHOD = "d3ad"
"""What ``edgead train`` trains on a CPU when no method is named: D3AD ``s`` trains in 11-14 minutes on two cores
(docs/results.md); DiffusionAD ``s``, the default on a GPU, needs hours and 12 GB there."""


def default_method(device: str) -> str:
    """The method trained when none is named: DiffusionAD where a CUDA GPU trains, D3AD on a CPU."""
    import torch

    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "diffusionad" if gpu else CPU_DEFAULT_METHOD


def _sets_method(config: str | Path | None, overrides: list[str] | None) -> bool:
    """Whether a configuration file or a --set names the method."""
    if any(o.split("=", 1)[0].strip() == "method" for o in overrides or ()):
        return True
    if config is None:
        return False
    import yaml

    data = yaml.safe_load(Path(config).read_text()) or {}
    return isinstance(data, dict) and "method" in data


# -------------------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportResult:
    bundle: Path
    stages: list[str]
    image_threshold: float | dict[str, float] | None
    """The calibrated threshold (per product for a bundle that serves several)."""
    parity: dict[str, Any]
    """ONNX Runtime against PyTorch on real images, per stage output and end to end."""
    fusion: dict[str, Any] | None = None


def export(
    run_dir: str | Path,
    out: str | Path,
    overwrite: bool = False,
    data: str | Sequence[str] | None = None,
    parity_images: int | None = 32,
    sign_key: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """A training run -> a calibrated, parity-checked bundle at ``out`` (ONNX graphs per stage). ``data``: the
    data sets if they moved since training; ``parity_images``: images compared with PyTorch (None: all);
    ``overrides``: inference settings of the method or calibration (``d3ad.dynamic=false``)."""
    require("torch", 'pip install "edgead[train]"', "Exporting")
    from .core.signing import sign
    from .export.flow import export_run

    with listening(progress):
        bundle, parity = export_run(
            run_dir,
            out,
            overwrite=overwrite,
            data=[data] if isinstance(data, str) else data,
            parity_images=parity_images,
            progress=progress is None and on_terminal(),
            overrides=list(overrides),
        )
    if sign_key:
        sign(bundle.root, sign_key)
    m = bundle.manifest
    thresholds = (
        {name: c.image.threshold for name, c in m.products.items()}
        if m.products
        else m.calibration.image.threshold
        if m.calibration
        else None
    )
    return ExportResult(
        bundle.root, [s.name for s in m.stages], thresholds, parity, m.provenance.get("export", {}).get("fusion")
    )


@dataclass(frozen=True)
class EngineResult:
    directory: str
    """Where the engines lie inside the bundle."""
    report: dict[str, Any]
    """Per stage: obtained precision, build seconds, size; validation against ONNX Runtime where a GPU ran."""
    signature_dropped: bool = False


def build_engines(
    bundle: str | Path,
    precision: str = "fp16",
    flavour: str = "auto",
    sm: str | None = None,
    workspace_gb: float = 2.0,
    max_batch: int = 1,
    calibration: str | Path | None = None,
    overwrite: bool = False,
    sign_key: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> EngineResult:
    """TensorRT engines of every stage, written into the bundle (``flavour`` tensorrt: TensorRT 10/11 on this GPU;
    rtx: TensorRT for RTX, which builds without a GPU for the compute capabilities ``sm``). ``int8`` builds the
    stages of the bundle's INT8 set from QDQ graphs calibrated on ``calibration`` good images."""
    from .export.tensorrt import build_engines as build

    with listening(progress):
        engine_set, report = build(
            bundle,
            precision,
            workspace_gb=workspace_gb,
            max_batch=max_batch,
            overwrite=overwrite,
            sign_key=sign_key,
            flavour=flavour,
            sm=sm,
            calibration=calibration,
        )
    dropped = bool(report.pop("signature_dropped", False))
    return EngineResult(engine_set.directory, report, dropped)


@dataclass(frozen=True)
class QuantizeResult:
    int8_stages: list[str]
    kept_fp32: dict[str, str]
    """Stage -> why it stays fp32."""
    report: dict[str, Any]
    signature_dropped: bool = False


def quantize(
    bundle: str | Path,
    calibration: str | Path,
    tolerance: float = 0.1,
    overwrite: bool = False,
    sign_key: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> QuantizeResult:
    """INT8 graphs beside the fp32 ones for the stages whose scores hold on good images the quantisation did not
    see (``tolerance``: the largest score change, as a share of the margin to the threshold)."""
    require("onnx", 'pip install "edgead[train]"', "INT8 quantisation")
    from .export.quantize import quantize_bundle

    with listening(progress):
        report = quantize_bundle(bundle, calibration, tolerance=tolerance, overwrite=overwrite, sign_key=sign_key)
    dropped = bool(report.pop("signature_dropped", False))
    kept = [name for name, st in report["stages"].items() if "kept_fp32" not in st]
    fp32 = {name: st["kept_fp32"] for name, st in report["stages"].items() if "kept_fp32" in st}
    return QuantizeResult(kept, fp32, report, dropped)


@dataclass(frozen=True)
class RepositoryResult:
    repository: Path
    models: list[str]


def triton_repository(
    bundles: Sequence[str | Path],
    out: str | Path,
    max_batch: int = 8,
    queue_delay_ms: float = 2.0,
    instances: int = 1,
    backend: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
) -> RepositoryResult:
    """A self-contained Triton model repository holding the bundles (one model per bundle and product), for a
    stock ``tritonserver``."""
    from .serving.repository import Batching, plan_models, write_repository

    models = plan_models(list(bundles))
    repo = write_repository(
        out,
        models,
        Batching(max_batch, round(queue_delay_ms * 1000), instances),
        backend=backend,
        threads=threads,
        copy_bundles=True,
        overwrite=overwrite,
    )
    return RepositoryResult(repo, [m.name for m in models])


# ---------------------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvaluationResult:
    report: dict[str, Any]
    """The full report (per product and their mean for several data sets): metrics, the operating point, per
    defect type, timing."""

    def _level(self, level: str) -> dict[str, Any]:
        return (self.report.get("mean") or self.report).get(level) or {}

    @property
    def image_auroc(self) -> float | None:
        return self._level("image").get("auroc")

    @property
    def aupro(self) -> float | None:
        return self._level("pixel").get("aupro_0.3")


def evaluate(
    bundle: str | Path,
    data: str | Path | Sequence[str | Path],
    product: str | None = None,
    backend: str = "auto",
    int8: bool = False,
    sheet: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Image and pixel AUROC, AP, F1max and AUPRO@0.3 on the test images of ``data`` (several: per product and
    their mean), with the false rejects and misses at the bundle's threshold. Test images are never fitted on."""
    from .core.bundle import load_bundle
    from .data.datasets import load_dataset
    from .evaluation.evaluate import evaluate as run
    from .evaluation.evaluate import mean_report, save_sheets
    from .runtime.detector import Detector

    roots = [data] if isinstance(data, (str, Path)) else list(data)
    if product and len(roots) > 1:
        raise ConfigError(
            "product names the product of a single data set; with several, each folder name is its product"
        )
    b = load_bundle(bundle)
    reports = {}
    with listening(progress):
        for root in roots:
            ds = load_dataset(root, validation_fraction=0.0)
            name = product or (ds.name if b.manifest.products else None)
            with Detector(b, backend=backend, product=name, int8=int8) as det:
                done = run(det, ds, progress=progress is None and on_terminal())
                if sheet:
                    picture = "sheet.png" if len(roots) == 1 else f"{ds.name}.png"
                    done.report["sheets"] = [str(p) for p in save_sheets(det, done, Path(sheet), name=picture)]
            reports[ds.name] = done.report
    if len(reports) == 1:
        return EvaluationResult(next(iter(reports.values())))
    return EvaluationResult({"products": reports, "mean": mean_report(reports)})


# --------------------------------------------------------------------------------- calibrate
@dataclass(frozen=True)
class CalibrationResult:
    bundle: Path
    image_threshold: float
    previous_image_threshold: float | None
    images: int
    """Good images the threshold was fitted on (after those left out: training images, repeats, suspects)."""
    warnings: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    signature_dropped: bool = False


def calibrate(
    bundle: str | Path,
    good: Sequence[str | Path],
    target_frr: float | None = None,
    confidence: float | None = None,
    rule: str | None = None,
    max_frames: int | None = None,
    backend: str = "auto",
    product: str | None = None,
    refuse_outliers: bool = False,
    keep_suspects: bool = False,
    accept_misses: bool = False,
    sign_key: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> CalibrationResult:
    """New thresholds from a line's own good parts (images, folders, globs, videos, or a live source with
    ``max_frames``); the old ones go to the manifest's history. What the bundle knows guards the change
    (``edgead.runtime.calibration.recalibrate``); nothing is written when it refuses."""
    from .core.bundle import load_bundle
    from .core.config import CalibrationConfig
    from .core.outputs import exclusive
    from .runtime.calibration import recalibrate

    settings = {"target_frr": target_frr, "confidence": confidence, "rule": rule}
    cfg = CalibrationConfig(
        **{k: v for k, v in settings.items() if v is not None}, outliers="refuse" if refuse_outliers else "warn"
    )
    with exclusive(bundle, "calibrate"), listening(progress):  # read, change and write the manifest as one step
        b = load_bundle(bundle)
        old, new, dropped = recalibrate(
            b,
            [str(g) for g in good],
            cfg,
            backend=backend,
            max_frames=max_frames,
            progress=progress is None and on_terminal(),
            sign_key=sign_key,
            product=product,
            keep_suspects=keep_suspects,
            accept_misses=accept_misses,
        )
    report = {
        "bundle": str(b.root),
        "images": new.n_images,
        "rule": new.rule,
        "target_frr": new.target_frr,
        "image_threshold": new.image.threshold,
        "previous_image_threshold": old.image.threshold if old else None,
        "threshold_interval_90": new.threshold_interval,
        "pixel_threshold": new.pixel.threshold,
        "synthetic_miss_rate": new.synthetic_miss_rate,
        "previous_synthetic_miss_rate": old.synthetic_miss_rate if old else None,
        "int8_stages": [q.stage for q in b.manifest.int8.stages] if b.manifest.int8 else [],
    }
    return CalibrationResult(
        b.root,
        new.image.threshold,
        old.image.threshold if old else None,
        new.n_images,
        list(new.warnings),
        report,
        dropped,
    )
