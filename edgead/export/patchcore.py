"""Export of the PatchCore baseline: feature_extractor graph + memory bank, calibrated, checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from ..bundle import BundleWriter, PatchCoreParams, Scoring
from ..errors import EdgeadError
from .calibration import calibrate
from .parity import check_parity


def export_patchcore(run_dir: Path, meta, config, ds, out, overwrite, progress, parity_images=None):
    from ..training.patchcore import build_patch_features
    from .exporter import _parity_images, _write_stage, add_sample_images, base_manifest
    from .stages import feature_extractor_contract

    bank_file = run_dir / "memory_bank.safetensors"
    if not bank_file.is_file():
        raise EdgeadError(f"{run_dir} has no memory_bank.safetensors; fit it with 'edgead train --method patchcore'")
    bank = load_file(str(bank_file))["memory_bank"].numpy()
    model = build_patch_features(config)
    size = config.data.image_size
    with BundleWriter(out, overwrite) as w:
        _write_stage(w, model, feature_extractor_contract(size, model.channels, model.stride), "patchcore")
        w.add_extra("memory_bank", bank.astype(np.float32))
        add_sample_images(w, ds, size)
        sigma = config.calibration.smoothing_sigma or 4.0  # PatchCore's Gaussian blur
        manifest = base_manifest(config, w.stages, Scoring("max", sigma), meta, ds)
        manifest.patchcore = PatchCoreParams(model.stride, config.patchcore.neighbourhood, int(bank.shape[0]))
        manifest.extras = w.extras
        staged = w.open_staged(manifest)
        manifest.calibration = calibrate(staged, [s.path for s in ds.validation], config.calibration,
                                         ds.validation_source, progress=progress)
        staged = w.open_staged(manifest)
        parity = check_parity({"feature_extractor": model}, staged, _parity_images(ds, parity_images),
                              progress=progress)
        manifest.provenance["export"]["parity"] = parity
        bundle = w.commit(manifest)
    return bundle, parity
