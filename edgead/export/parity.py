"""Exported graphs against PyTorch on real images, per stage and end to end.

The runtime pipeline runs twice on every image: with the training run's PyTorch modules as
stage backends (the reference) and with ONNX Runtime. ``edgead validate``'s comparison then
feeds each ONNX stage the exact inputs its PyTorch twin saw, so the pre-processing,
orchestration and scoring code is shared and only the stage engines differ.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.bundle import Bundle
from ..core.errors import ParityError
from ..data.io import read_image
from ..runtime.detector import Detector
from ..runtime.validate import validate
from .torch_backend import TorchBackend

PARITY_TOLERANCE = {"atol": 1e-3, "rtol": 0.0}
"""fp32 ONNX against fp32 PyTorch: every output element within 1e-3."""


def check_parity(
    modules: dict[str, torch.nn.Module],
    bundle: Bundle,
    images: list[Path],
    progress: bool = False,
    product: str | None = None,
) -> dict:
    """The validation report (as a dict) of ONNX Runtime CPU against PyTorch; ParityError if outside.

    ``product``: whose thresholds decide, for a bundle that serves several.
    """
    reference = Detector(bundle, backends={s: TorchBackend(m, bundle, s) for s, m in modules.items()}, product=product)
    onnx = Detector(bundle, backend="onnxruntime-cpu", product=product)
    try:
        report = validate(
            onnx,
            (read_image(f) for f in images),
            reference=reference,
            tolerance=PARITY_TOLERANCE,
            names=[str(f) for f in images],
            progress=progress,
        )
    finally:
        onnx.close()
        reference.close()
    if not report.passed:
        raise ParityError(f"ONNX Runtime disagrees with PyTorch:\n{report.table()}")
    return report.to_dict()
