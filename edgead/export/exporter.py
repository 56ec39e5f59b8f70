"""``edgead export RUN``: training run -> calibrated, parity-checked bundle.

Steps: trace each stage to ONNX (checked, contract stamped), write the method's extras, then,
through the runtime itself, calibrate on anomaly-free validation images and compare with
PyTorch on real images. The bundle appears at ``out`` only when every step passed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import random
from pathlib import Path

import numpy as np

from .. import __version__
from ..bundle import (
    Bundle,
    BundleWriter,
    DiffusionADParams,
    Manifest,
    Preprocess,
    Scoring,
    SCHEMA_VERSION,
)
from ..config import ExperimentConfig, to_dict
from ..data.datasets import AnomalyDataset, load_dataset
from ..errors import DataError, EdgeadError
from ..training.checkpoint import read_checkpoint_meta
from .calibration import calibrate
from .onnx_export import OPSET, export_stage
from .stages import StageContract

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def add_sample_images(w: BundleWriter, ds: AnomalyDataset, size: int, n: int = 8) -> None:
    """A few anomaly-free validation images (uint8, model size) for validating engines on the device."""
    from ..data.io import read_image, resize

    images = [resize(read_image(s.path), size) for s in ds.validation[:n]]
    if images:
        w.add_extra("sample_images", np.stack(images))


def _write_stage(w: BundleWriter, module, contract: StageContract, method: str) -> None:
    export_stage(module, contract, w.graph_path(contract.name), method)
    w.add_stage(contract.name, list(contract.inputs), list(contract.outputs), OPSET)


def _parity_images(ds: AnomalyDataset, n: int | None, seed: int = 0) -> list[Path]:
    """Validation images first, then test images (verification only, nothing is fitted)."""
    pool = [s.path for s in ds.validation] + [s.path for s in ds.test]
    if n is None or n >= len(pool):
        return pool
    return sorted(random.Random(seed).sample(pool, n))


def _dataset(config: ExperimentConfig, data: str | None) -> AnomalyDataset:
    root = data or config.data.path
    if root is None:
        raise DataError("no dataset for calibration: pass --data DIR")
    return load_dataset(root, config.data.validation_fraction, config.data.split_seed)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": str(torch.__version__), "onnx": str(onnx.__version__),
            "onnxruntime": str(onnxruntime.__version__), "python": platform.python_version()}


def export_run(
    run_dir: str | Path,
    out: str | Path,
    overwrite: bool = False,
    data: str | None = None,
    parity_images: int | None = 32,
    progress: bool = True,
) -> tuple[Bundle, dict]:
    meta, config = read_checkpoint_meta(run_dir)
    ds = _dataset(config, data)
    if config.method == "diffusionad":
        return _export_diffusionad(Path(run_dir), meta, config, ds, out, overwrite, parity_images, progress)
    if config.method == "patchcore":
        from .patchcore import export_patchcore

        return export_patchcore(Path(run_dir), meta, config, ds, out, overwrite, progress, parity_images)
    raise EdgeadError(f"cannot export method {config.method!r}; valid: diffusionad, patchcore")


def base_manifest(config: ExperimentConfig, stages, scoring: Scoring, meta: dict, ds: AnomalyDataset) -> Manifest:
    size = config.data.image_size
    return Manifest(
        schema_version=SCHEMA_VERSION,
        edgead_version=__version__,
        method=config.method,
        created=_now(),
        preprocess=Preprocess(image_size=[size, size], mean=[0.5] * 3, std=[0.5] * 3),
        scoring=scoring,
        stages=stages,
        provenance={
            "training": {"config": to_dict(config), "steps": meta.get("steps_done"),
                         "train_seconds": meta.get("train_seconds"),
                         "trained_with": meta.get("edgead_version")},
            "dataset": meta.get("dataset", {}),
            "calibration_data": str(ds.root),
            "export": {"versions": _versions()},
        },
    )


def _export_diffusionad(run_dir, meta, config, ds, out, overwrite, parity_images, progress):
    from ..schedulers import alphas_cumprod
    from ..training.diffusionad import load_diffusionad
    from .parity import check_parity
    from .stages import denoiser_step_contract, segmenter_contract
    from .torch_backend import diffusionad_stages

    modules = diffusionad_stages(load_diffusionad(run_dir))
    size, d, s = config.data.image_size, config.diffusionad, config.schedule
    ab = alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule)
    with BundleWriter(out, overwrite) as w:
        _write_stage(w, modules["denoiser_step"], denoiser_step_contract(size), "diffusionad")
        _write_stage(w, modules["segmenter"], segmenter_contract(size), "diffusionad")
        # fixed noise e1, e2 (seeded at export): the same frame always gets the same score
        rng = np.random.default_rng(d.noise_seed)
        w.add_extra("noise_s", rng.standard_normal((1, 3, size, size)).astype(np.float32))
        w.add_extra("noise_b", rng.standard_normal((1, 3, size, size)).astype(np.float32))
        add_sample_images(w, ds, size)
        manifest = base_manifest(
            config, w.stages, Scoring("top_k_mean", config.calibration.smoothing_sigma), meta, ds
        )
        manifest.diffusionad = DiffusionADParams(
            t_s=d.t_s, t_b=d.t_b, alpha_bar_s=float(ab[d.t_s]), alpha_bar_b=float(ab[d.t_b]),
            guidance_w=d.guidance_w, top_k=d.top_k, num_train_timesteps=s.num_train_timesteps,
            beta_schedule=s.beta_schedule, beta_start=s.beta_start, beta_end=s.beta_end,
        )
        manifest.extras = w.extras
        staged = w.open_staged(manifest)
        manifest.calibration = calibrate(
            staged, [x.path for x in ds.validation], config.calibration, ds.validation_source,
            progress=progress,
        )
        staged = w.open_staged(manifest)
        parity = check_parity(modules, staged, _parity_images(ds, parity_images), progress=progress)
        manifest.provenance["export"]["parity"] = parity
        bundle = w.commit(manifest)
    return bundle, parity

