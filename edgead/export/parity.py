"""Exported graphs against PyTorch on real images, per stage and end to end (Polygraphy-style).

Per stage: max and mean absolute error and the max error relative to the reference's largest
magnitude, with a NaN/Inf check. End to end: image scores and decisions of the ONNX Runtime
pipeline against the PyTorch model with the same fixed noise and the same post-processing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..bundle import Bundle
from ..data.io import read_image
from ..errors import ParityError
from ..runtime.detector import Detector
from ..runtime.preprocess import to_batch
from ..runtime.scoring import image_scores, smooth


@dataclass
class Comparison:
    max_abs: float
    mean_abs: float
    max_rel: float
    finite: bool

    @classmethod
    def of(cls, out: np.ndarray, ref: np.ndarray) -> Comparison:
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        scale = max(float(np.abs(ref).max()), 1e-12)
        return cls(float(diff.max()), float(diff.mean()), float(diff.max()) / scale,
                   bool(np.isfinite(out).all()))

    def merge(self, other: Comparison) -> Comparison:
        return Comparison(max(self.max_abs, other.max_abs), max(self.mean_abs, other.mean_abs),
                          max(self.max_rel, other.max_rel), self.finite and other.finite)


def diffusionad_parity(model, bundle: Bundle, images: list[Path], atol: float = 1e-3,
                       batch: int = 4, progress: bool = False) -> dict:
    """Compare the bundle's ONNX Runtime path with the PyTorch model on ``images``."""
    from tqdm.auto import tqdm

    m = bundle.manifest
    p = m.diffusionad
    cal = m.calibration
    if p is None or cal is None:
        raise ParityError("parity needs a calibrated diffusionad bundle")
    det = Detector(bundle, backend="onnxruntime-cpu")
    noise_s = torch.from_numpy(bundle.extra("noise_s"))
    noise_b = torch.from_numpy(bundle.extra("noise_b"))
    sch = model.scheduler
    stages: dict[str, Comparison] = {}
    scores_t, scores_o = [], []
    try:
        for i in tqdm(range(0, len(images), batch), disable=not progress, desc="parity", unit="batch"):
            rgbs = [read_image(f) for f in images[i:i + batch]]
            x = to_batch(rgbs, m.preprocess)
            b = len(rgbs)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                x_ts, x_tb = sch.noised_inputs(xt, noise_s, noise_b)
                x_in = torch.cat([x_ts, x_tb])
                t = torch.tensor([float(p.t_s)] * b + [float(p.t_b)] * b)
                eps_t = model.denoiser(x_in, t).sample
                x0_hat = sch.step(x_ts, x_tb, eps_t[:b], eps_t[b:])
                mask_t = model.segmenter(xt, x0_hat)
            eps_o = det.backends["denoiser_step"].run({"x_t": x_in.numpy(), "t": t.numpy()})["eps"]
            mask_o = det.backends["segmenter"].run(
                {"image": x, "reconstruction": x0_hat.numpy()})["mask"]
            for name, out, ref in (("denoiser_step", eps_o, eps_t), ("segmenter", mask_o, mask_t)):
                c = Comparison.of(out, ref.numpy())
                stages[name] = stages[name].merge(c) if name in stages else c
            maps_t = smooth(mask_t[:, 0].numpy(), m.scoring.smoothing_sigma)
            scores_t.append(image_scores(maps_t, m.scoring.image_score, p.top_k))
            scores_o.append(det.score_maps(rgbs)[1])
    finally:
        det.close()
    st, so = np.concatenate(scores_t), np.concatenate(scores_o)
    dec_t, dec_o = st > cal.image.threshold, so > cal.image.threshold
    mismatches = [str(images[j]) for j in np.flatnonzero(dec_t != dec_o)]
    report = {
        "images": len(images),
        "atol": atol,
        "stages": {k: asdict(v) for k, v in stages.items()},
        "end_to_end": {
            "max_abs_score_diff": float(np.abs(st - so).max()),
            "max_rel_score_diff": float(np.abs(st - so).max() / max(np.abs(st).max(), 1e-12)),
            "decisions_agree": int((dec_t == dec_o).sum()),
            "decision_mismatches": mismatches,
        },
    }
    bad = [k for k, v in stages.items() if not v.finite or v.max_abs > atol]
    if bad or mismatches:
        raise ParityError(
            f"ONNX Runtime disagrees with PyTorch: stages over atol {atol}: {bad or 'none'}; "
            f"decision mismatches: {len(mismatches)} of {len(images)} ({report})"
        )
    return report
