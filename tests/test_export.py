import numpy as np
import pytest

from edgead.data.datasets import load_dataset
from edgead.data.io import read_image
from edgead.errors import BundleError
from edgead.export.exporter import export_run
from edgead.export.parity import Comparison


def test_parity_report(tiny_bundle):
    from edgead import load_bundle

    p = load_bundle(tiny_bundle).manifest.provenance["export"]["parity"]
    assert p["images"] == 8
    for stage in ("denoiser_step", "segmenter"):
        assert p["stages"][stage]["finite"] and p["stages"][stage]["max_abs"] < 1e-4
    assert p["end_to_end"]["decisions_agree"] == 8


def test_export_refuses_existing_output(tiny_run, tiny_bundle):
    before = (tiny_bundle / "manifest.yaml").read_text()
    with pytest.raises(BundleError, match="already exists"):
        export_run(tiny_run, tiny_bundle, progress=False)
    assert (tiny_bundle / "manifest.yaml").read_text() == before


def test_calibration_uses_only_validation_images(tiny_bundle, demo_data):
    from edgead import Detector

    ds = load_dataset(demo_data)
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as d:
        _, scores, _ = d.score_maps([read_image(s.path) for s in ds.validation])
        cal = d.manifest.calibration
    assert cal.image.max == pytest.approx(scores.max(), rel=1e-6)
    assert cal.image.mean == pytest.approx(scores.mean(), rel=1e-6)


def test_comparison_flags_non_finite():
    c = Comparison.of(np.array([1.0, np.nan]), np.array([1.0, 1.0]))
    assert not c.finite
    ok = Comparison.of(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    assert ok.max_abs == pytest.approx(0.5) and ok.max_rel == pytest.approx(0.2)
