import numpy as np
import pytest

from edgead.core.errors import BundleError, ParityError
from edgead.data.datasets import load_dataset
from edgead.data.io import read_image
from edgead.export.flow import export_run
from edgead.runtime.validate import compare_outputs


def test_parity_report(tiny_bundle):
    from edgead import load_bundle

    p = load_bundle(tiny_bundle).manifest.provenance["export"]["parity"]
    assert p["images"] == 8 and p["reference"] == "pytorch-eager" and p["backend"] == "onnxruntime-cpu"
    outputs = {o["stage"]: o for o in p["outputs"]}
    assert set(outputs) == {"denoiser_step", "segmenter"}
    for o in outputs.values():
        assert o["finite"] and o["passed"] and o["max_abs"] < 1e-4
    assert p["decisions_agree"] == 8 and p["passed"]


def test_parity_fails_when_a_graph_differs_from_pytorch(tiny_run, tiny_bundle, demo_data):
    import torch

    from edgead import load_bundle
    from edgead.export.flow import method_export
    from edgead.export.parity import check_parity

    class Shifted(torch.nn.Module):  # what a wrong export would look like from the other side
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args) + 0.01

    modules = method_export(tiny_run).torch_modules()
    modules["segmenter"] = Shifted(modules["segmenter"])
    images = sorted((demo_data / "test" / "good").iterdir())[:2]
    with pytest.raises(ParityError, match=r"segmenter.*FAIL"):
        check_parity(modules, load_bundle(tiny_bundle), images)


def test_export_refuses_existing_output(tiny_run, tiny_bundle):
    before = (tiny_bundle / "manifest.yaml").read_text()
    with pytest.raises(BundleError, match="already exists"):
        export_run(tiny_run, tiny_bundle, progress=False)
    assert (tiny_bundle / "manifest.yaml").read_text() == before


def test_calibration_uses_only_validation_images(tiny_bundle, demo_data):
    from edgead import Detector

    ds = load_dataset(demo_data)
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as d:
        scores = d.score_batch([read_image(s.path) for s in ds.validation]).scores
        cal = d.manifest.calibration
    assert cal.image.max == pytest.approx(scores.max(), rel=1e-6)
    assert cal.image.mean == pytest.approx(scores.mean(), rel=1e-6)


def test_output_comparison_flags_non_finite_and_measures_error():
    (c,) = compare_outputs("s", {"y": np.array([1.0, np.nan])}, {"y": np.array([1.0, 1.0])}, atol=1.0, rtol=0.0)
    assert not c.finite and not c.passed
    (ok,) = compare_outputs("s", {"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.5])}, atol=0.5, rtol=0.0)
    assert ok.max_abs == pytest.approx(0.5) and ok.max_rel == pytest.approx(0.2) and ok.passed
    (bad,) = compare_outputs("s", {"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.5])}, atol=0.4, rtol=0.0)
    assert not bad.passed
