"""Real data end to end: train D3AD (tiny, 64 px) -> export -> evaluate on ../shared/data/hazelnut_toy.

The metrics must clear floors that a broken model cannot reach (a map that ignores the image, a
flipped score, a pre-processing mismatch between training and runtime all land near 0.5), and the
ONNX Runtime path must make the same decision as PyTorch on every validation and test image.
Measured on the 2-core CPU: image AUROC 0.98, pixel AUROC 0.89, AUPRO 0.52 (in 12 s). Skips when the
data is not available.
"""

import json

import numpy as np
import pytest

from .conftest import shared_dataset

pytestmark = pytest.mark.slow  # the inner loop, pytest -m "not slow", leaves these out


@pytest.mark.slow
def test_d3ad_on_real_images_clears_floors_and_matches_pytorch(tmp_path):
    from edgead import Detector
    from edgead.core.config import load_config
    from edgead.data.datasets import load_dataset
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run
    from edgead.methods import get_method
    from edgead.training import train

    hazelnut = shared_dataset("hazelnut_toy")
    cfg = load_config(
        None,
        [
            f"data.path={hazelnut}",
            "method=d3ad",
            "data.image_size=64",
            "train.device=cpu",
            "train.steps=20",
            *get_method("d3ad").tiny,
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    bundle, parity = export_run(tmp_path / "run", tmp_path / "hazelnut.edgead", parity_images=None, progress=False)
    ds = load_dataset(hazelnut)
    assert parity["images"] == len(ds.validation) + len(ds.test)
    assert parity["reference"] == "pytorch-eager" and parity["backend"] == "onnxruntime-cpu"
    assert parity["decision_mismatches"] == [] and parity["decisions_agree"] == parity["images"] and parity["passed"]
    with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
        report = evaluate(det, ds, progress=False).report
    assert report["image"]["auroc"] >= 0.9 and report["image"]["ap"] >= 0.9
    assert report["pixel"]["auroc"] >= 0.8 and report["pixel"]["aupro_0.3"] >= 0.3
    assert set(report["per_defect_auroc"]) == {"colour"} and np.isfinite(report["pixel"]["f1max"])
    assert json.loads(json.dumps(report))["per_defect_auroc"] == report["per_defect_auroc"]  # a JSON report
