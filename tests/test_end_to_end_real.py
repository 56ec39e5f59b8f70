"""Real data end to end: train (tiny, 64 px) -> export -> evaluate on ../shared/data/tire.

Checks that every metric is reported and that the ONNX Runtime path makes the same decision as
PyTorch on every tire validation and test image. Skips when the data is not available.
"""

import json

import numpy as np
import pytest

from .conftest import TINY, shared_dataset


@pytest.mark.slow
def test_tire_train_export_evaluate(tmp_path):
    from edgead import Detector
    from edgead.config import load_config
    from edgead.data.datasets import load_dataset
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run
    from edgead.training import train

    tire = shared_dataset("tire")
    cfg = load_config(None, [f"data.path={tire}", "train.steps=40", "data.foreground=true", *TINY])
    train(cfg, tmp_path / "run", progress=False)
    bundle, parity = export_run(tmp_path / "run", tmp_path / "tire.edgead", parity_images=None, progress=False)
    ds = load_dataset(tire)
    assert parity["images"] == len(ds.validation) + len(ds.test) == 29 + 112
    assert parity["reference"] == "pytorch-eager" and parity["backend"] == "onnxruntime-cpu"
    assert parity["decision_mismatches"] == [] and parity["decisions_agree"] == 141 and parity["passed"]
    with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
        report = evaluate(det, ds, progress=False).report
    for level in ("image", "pixel"):
        for key in ("auroc", "ap", "f1max"):
            assert np.isfinite(report[level][key]) and 0 <= report[level][key] <= 1
    assert 0 <= report["pixel"]["aupro_0.3"] <= 1
    assert set(report["per_defect_auroc"]) == {"combined", "contamination", "cut", "hole"}
    json.dumps(report)  # serialisable
