"""``edgead export RUN``: one flow for every method — training run -> calibrated, parity-checked bundle.

    write stages (ONNX, checked, contract stamped) -> write extras -> method statistics
    -> calibrate on anomaly-free validation images -> parity against PyTorch -> commit

A method contributes a ``MethodExport`` (registered in ``edgead.methods``): its stage modules
with their contracts, its extras, its manifest parameters and its scoring. Calibration and
parity run through the runtime itself. The bundle appears at ``out`` only when every step passed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.bundle import SCHEMA_VERSION, Bundle, BundleWriter
from ..core.codec import to_dict
from ..core.config import ExperimentConfig
from ..core.contracts import StageContract
from ..core.errors import ConfigError, DataError, ExportError
from ..core.manifest import Manifest, Scoring
from ..core.preprocess import Preprocess, resize
from ..core.progress import report
from ..core.version import __version__
from ..data.datasets import AnomalyDataset, load_dataset
from ..data.io import read_image
from ..methods import get_method
from ..runtime.backends import Backend, reuse_backends
from ..runtime.calibration import MoreGood, calibrate
from ..training import warn_cuts
from ..training.checkpoint import read_checkpoint_meta
from .onnx_export import OPSET, export_stage
from .parity import check_parity
from .torch_backend import TorchBackend

log = logging.getLogger(__name__)


class MethodExport(ABC):
    """One method's part of the export flow (PyTorch side)."""

    def __init__(self, run_dir: Path, meta: dict[str, Any], config: ExperimentConfig):
        self.run_dir, self.meta, self.config = Path(run_dir), meta, config

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.for_size(self.config.data.image_size)

    @abstractmethod
    def stages(self) -> dict[str, tuple[torch.nn.Module, StageContract]]:
        """Stage name -> (module computing it, its contract), in pipeline order."""

    def extras(self) -> dict[str, np.ndarray]:
        """Arrays the runtime pipeline needs besides the graphs."""
        return {}

    @abstractmethod
    def params(self) -> Any:
        """The manifest's method parameters (an instance of the method's ``params`` dataclass)."""

    @abstractmethod
    def scoring(self) -> Scoring:
        """How the runtime turns the method's anomaly map into an image score."""

    def fit_statistics(self, bundle: Bundle, images: list[Path], progress: bool = False) -> None:  # noqa: B027
        """Statistics the pipeline needs from anomaly-free images before calibration (default: none).

        Runs on the staged bundle through the runtime; updates ``bundle.manifest.params``.
        """

    def more_good_scores(self, bundle: Bundle, data_root: Path, progress: bool = False) -> MoreGood | None:
        """Good scores besides the held-out images' for the default threshold, where the method can score its
        own training images as unseen (PatchCore: each left out of the memory bank in turn). Default: none."""
        return None

    def torch_modules(self) -> dict[str, torch.nn.Module]:
        return {name: module for name, (module, _) in self.stages().items()}


def torch_backends(run_dir: str | Path, bundle: Bundle) -> dict[str, Backend]:
    """The training run's networks, one PyTorch backend per exported stage (any registered method): the bundle's
    pipeline with PyTorch in place of ONNX Runtime, for benchmarks and parity."""
    return {
        stage: TorchBackend(module, bundle, stage) for stage, module in method_export(run_dir).torch_modules().items()
    }


def method_export(run_dir: str | Path, overrides: list[str] | None = None) -> MethodExport:
    """The export hooks of the training run in ``run_dir``.

    ``overrides`` change inference settings only: keys of the method's own section (e.g.
    d3ad.dynamic=false for an ablation) or of ``calibration``; anything that shaped the trained
    networks is the run's and cannot change here.
    """
    meta, config = read_checkpoint_meta(run_dir)
    if overrides:
        from ..core.codec import apply_overrides, from_dict

        for item in overrides:
            section = item.partition("=")[0].split(".")[0]
            if section not in (config.method, "calibration"):
                raise ConfigError(
                    f"export --set {item}: only {config.method}.* and calibration.* can change at "
                    "export; the rest is the training run's"
                )
        config = from_dict(ExperimentConfig, apply_overrides(to_dict(config), overrides)).validate()
    return get_method(config.method).load("exporter")(Path(run_dir), meta, config)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _parity_images(ds: AnomalyDataset, n: int | None, seed: int = 0) -> list[Path]:
    """Validation images first, then test images (verification only, nothing is fitted)."""
    pool = [s.path for s in ds.validation] + [s.path for s in ds.test]
    if n is None or n >= len(pool):
        return pool
    return sorted(random.Random(seed).sample(pool, n))


def _datasets(config: ExperimentConfig, data: list[str] | None) -> list[AnomalyDataset]:
    """One dataset per product: ``data`` (if the datasets moved since training) or the run's own."""
    roots = list(data) if data else config.data_paths
    if not roots:
        raise DataError("no dataset for calibration: pass --data DIR")
    trained = [Path(p).name for p in config.data_paths]
    if trained and sorted(Path(r).name for r in roots) != sorted(trained):
        raise DataError(
            f"--data must name the products the run was trained on ({', '.join(trained)}); "
            f"got {', '.join(Path(r).name for r in roots)}"
        )
    return [load_dataset(r, config.data.validation_fraction, config.data.split_seed) for r in roots]


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "python": platform.python_version(),
    }


def synthetic_scores(
    bundle: Bundle, images: list[Path], config: ExperimentConfig, product: str | None = None, seed: int = 0
) -> np.ndarray:
    """Image scores of synthetic anomalies, one made from each calibration image (the training synthesis).

    A check, not a fit: nothing is tuned on them. A threshold that misses many of them is too high.
    """
    from ..runtime.detector import Detector
    from ..training.data import DeviceImages, load_images
    from ..training.synthesis import AnomalySynthesizer

    if not images:
        return np.zeros(0)
    pre = bundle.manifest.preprocess
    data = DeviceImages(load_images(images, pre), torch.device("cpu"), config.data.foreground)
    synth = AnomalySynthesizer(pre.image_size[0])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        anomalous, _ = synth(data.images.float() / 255.0, g, data.foreground)
    frames = list((anomalous.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8))
    with Detector(bundle, backend="onnxruntime-cpu", product=product) as det:
        return np.concatenate([det.score_batch(frames[i : i + 4]).scores for i in range(0, len(frames), 4)])


MAX_SYNTHETIC_MISS = 0.05
"""A default operating point should miss at most this share of the synthetic anomalies of its own images."""


def advise_sensitivity(cal, good: np.ndarray, synthetic: np.ndarray, product: str | None = None) -> None:
    """Record the share of synthetic anomalies the threshold misses; when it is above 5%, say (log and
    manifest) what would bring it down: how many more good images for ``edgead calibrate``, or that no
    number of them would at this false-reject target."""
    from ..runtime.calibration import images_for_misses, rounded_scores

    cal.synthetic_miss_rate = float(np.mean(synthetic <= cal.image.threshold)) if len(synthetic) else None
    cal.good_scores, cal.synthetic_scores = rounded_scores(good), rounded_scores(synthetic)
    miss = cal.synthetic_miss_rate
    if miss is None or miss <= MAX_SYNTHETIC_MISS:
        return
    where = f" of {product}" if product else ""
    w = (
        f"the threshold{where} misses {miss:.0%} of the synthetic anomalies made from its {cal.n_images} calibration "
        "images"
    )
    needed = images_for_misses(good, synthetic, cal, MAX_SYNTHETIC_MISS)
    if needed is not None:
        w += (
            f"; with about {needed} anomaly-free images ({needed - cal.n_images} more) the same false-reject target "
            f"would miss {MAX_SYNTHETIC_MISS:.0%} or fewer: re-calibrate on that many good parts with 'edgead "
            "calibrate BUNDLE --good DIR'"
        )
    else:
        w += (
            f"; more good images would not bring that to {MAX_SYNTHETIC_MISS:.0%} at this false-reject target (the "
            "model does not separate them enough): trade false rejects for misses with calibration.target_frr or "
            "calibration.confidence ('edgead calibrate BUNDLE --good DIR --target-frr ...')"
        )
    cal.warnings.append(w)
    log.warning(w)


def _merge_reports(reports: dict[str, dict]) -> dict:
    """Per-product parity reports as one: worst output errors, all decisions."""
    first = next(iter(reports.values()))
    worst: dict[tuple[str, str], dict] = {}
    for r in reports.values():
        for o in r["outputs"]:
            key = (o["stage"], o["output"])
            w = worst.setdefault(key, dict(o))
            w.update(
                max_abs=max(w["max_abs"], o["max_abs"]),
                max_rel=max(w["max_rel"], o["max_rel"]),
                finite=w["finite"] and o["finite"],
                passed=w["passed"] and o["passed"],
            )
    return {
        **{k: first[k] for k in ("backend", "reference", "tolerance")},
        "images": sum(r["images"] for r in reports.values()),
        "outputs": list(worst.values()),
        "score_max_abs_diff": max(r["score_max_abs_diff"] for r in reports.values()),
        "score_rank_correlation": min(r["score_rank_correlation"] for r in reports.values()),
        "decisions_agree": sum(r["decisions_agree"] for r in reports.values()),
        "decision_mismatches": [m for r in reports.values() for m in r["decision_mismatches"]],
        "passed": all(r["passed"] for r in reports.values()),
        "products": reports,
    }


def export_run(
    run_dir: str | Path,
    out: str | Path,
    overwrite: bool = False,
    data: str | list[str] | None = None,
    parity_images: int | None = 32,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> tuple[Bundle, dict]:
    if Path(out).resolve() in (Path(run_dir).resolve(), *Path(run_dir).resolve().parents):
        raise ConfigError(
            f"--out {out} holds the training run {run_dir}; the bundle must go elsewhere (nothing was changed)"
        )
    hooks = method_export(run_dir, overrides)
    config, spec = hooks.config, get_method(hooks.config.method)
    sets = _datasets(config, [data] if isinstance(data, str) else data)
    stages = hooks.stages()
    if list(stages) != list(spec.stages):
        raise ExportError(
            f"the {spec.name} exporter produced the stages {list(stages)}, "
            f"its registration declares {list(spec.stages)}"
        )
    steps = len(stages) + 3 + len(sets)

    def step(done: int, what: str) -> None:
        report("export", done, steps, what)

    warn_cuts(hooks.meta.get("cut_by_budget") or {}, f"the run {run_dir}")  # said again where the bundle is made
    with BundleWriter(out, overwrite) as w, reuse_backends():  # one ONNX Runtime session per graph
        for i, (module, contract) in enumerate(stages.values()):
            step(i, f"ONNX graph of stage {contract.name}")
            export_stage(module, contract, w.graph_path(contract.name), spec.name)
            w.add_stage(contract, OPSET)
        for name, array in hooks.extras().items():
            w.add_extra(name, array)
        pre = hooks.preprocess
        held_out = [s.path for ds in sets for s in ds.validation]
        samples = [resize(read_image(p), pre) for p in held_out[:8]]
        if samples:  # for validating engines on the device without the data set
            w.add_extra("sample_images", np.stack(samples))
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            edgead_version=__version__,
            method=spec.name,
            created=_now(),
            preprocess=pre,
            scoring=hooks.scoring(),
            stages=w.stages,
            params=hooks.params(),
            extras=w.extras,
            provenance={
                "training": {
                    "config": to_dict(config),
                    "steps": hooks.meta.get("steps_done"),
                    "train_seconds": hooks.meta.get("train_seconds"),
                    "trained_with": hooks.meta.get("edgead_version"),
                    **({"cut_by_budget": cuts} if (cuts := hooks.meta.get("cut_by_budget")) else {}),
                },
                "dataset": hooks.meta.get("dataset", {}),
                "calibration_data": [str(ds.root) for ds in sets] if spec.multi_product else str(sets[0].root),
                "export": {"versions": _versions()},
            },
        )
        step(len(stages), f"statistics of the {len(held_out)} held-out good images")
        hooks.fit_statistics(w.open_staged(manifest), held_out, progress=progress)
        for k, ds in enumerate(sets):  # thresholds per product (DiAD serves several with one model)
            step(len(stages) + 1 + k, f"calibration of {ds.name} on its good images, synthetic anomalies")
            validation = [s.path for s in ds.validation]
            cross_fit = config.calibration.cross_fit and len(sets) == 1  # one product: its bank's rows are its own
            more = hooks.more_good_scores(w.open_staged(manifest), ds.root, progress) if cross_fit else None
            cal, good = calibrate(
                w.open_staged(manifest),
                validation,
                config.calibration,
                ds.validation_source,
                progress=progress,
                more=more,
            )
            if spec.multi_product:
                manifest.products[ds.name] = cal
            else:
                manifest.calibration = cal
            product = ds.name if spec.multi_product else None
            advise_sensitivity(
                cal, good, synthetic_scores(w.open_staged(manifest), validation, config, product), product
            )
        per_set = None if parity_images is None else max(1, parity_images // len(sets))
        step(steps - 2, "parity check of ONNX Runtime against PyTorch on real images")
        modules, staged = hooks.torch_modules(), w.open_staged(manifest)
        reports = {
            ds.name: check_parity(
                modules,
                staged,
                _parity_images(ds, per_set),
                progress=progress,
                product=ds.name if spec.multi_product else None,
            )
            for ds in sets
        }
        parity = next(iter(reports.values())) if len(reports) == 1 else _merge_reports(reports)
        manifest.provenance["export"]["parity"] = parity
        step(steps - 1, "verifying and writing the bundle")
        bundle = w.commit(manifest)
    step(steps, f"bundle {bundle.root} written")
    return bundle, parity
