"""Export of the PatchCore baseline: feature_extractor graph + memory bank, calibrated, checked."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..bundle import BundleWriter, PatchCoreParams, Scoring
from ..data.io import read_image
from ..errors import EdgeadError, ParityError
from ..runtime.detector import Detector
from ..runtime.knn import NearestNeighbourScorer
from ..runtime.preprocess import to_batch
from ..runtime.scoring import image_scores, smooth
from .calibration import calibrate
from .parity import Comparison


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
        parity = patchcore_parity(model, staged, _parity_images(ds, parity_images))
        manifest.provenance["export"]["parity"] = parity
        bundle = w.commit(manifest)
    return bundle, parity


def patchcore_parity(model, bundle, images: list[Path], atol: float = 1e-3, batch: int = 8) -> dict:
    m = bundle.manifest
    cal = m.calibration
    det = Detector(bundle, backend="onnxruntime-cpu")
    scorer = NearestNeighbourScorer(bundle.extra("memory_bank"))
    comp, st, so = None, [], []
    h, w = m.preprocess.image_size
    try:
        for i in range(0, len(images), batch):
            rgbs = [read_image(f) for f in images[i:i + batch]]
            x = to_batch(rgbs, m.preprocess)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            out = det.backends["feature_extractor"].run({"image": x})["features"]
            c = Comparison.of(out, ref)
            comp = c if comp is None else comp.merge(c)
            import cv2

            maps = np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR) for d in scorer.distances(ref)])
            st.append(image_scores(smooth(maps, m.scoring.smoothing_sigma), "max"))
            so.append(det.score_maps(rgbs)[1])
    finally:
        det.close()
    st_a, so_a = np.concatenate(st), np.concatenate(so)
    mismatches = [str(images[j]) for j in np.flatnonzero((st_a > cal.image.threshold) != (so_a > cal.image.threshold))]
    report = {"images": len(images), "atol": atol, "stages": {"feature_extractor": asdict(comp)},
              "end_to_end": {"max_abs_score_diff": float(np.abs(st_a - so_a).max()),
                             "max_rel_score_diff": float(np.abs(st_a - so_a).max() / max(np.abs(st_a).max(), 1e-12)),
                             "decisions_agree": int(len(images) - len(mismatches)),
                             "decision_mismatches": mismatches}}
    if not comp.finite or comp.max_abs > atol or mismatches:
        raise ParityError(f"ONNX Runtime disagrees with PyTorch for patchcore: {report}")
    return report
