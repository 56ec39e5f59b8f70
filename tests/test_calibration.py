"""Operating points from good images only: re-calibration, synthetic check, no training images in tests."""

import json
import shutil

import pytest

from edgead import load_bundle

from .conftest import edgead_cli


def test_export_records_the_operating_point(tiny_bundle):
    cal = load_bundle(tiny_bundle).manifest.calibration
    assert cal.rule == "tolerance" and cal.target_frr == 0.01 and cal.confidence == 0.95
    assert cal.transform == "logit"  # DiffusionAD's scores are mask probabilities
    assert cal.n_images == 6 and cal.k > 3 and 0 < cal.image.threshold < 1
    lo, hi = cal.threshold_interval
    assert lo <= hi and 0.0 <= cal.synthetic_miss_rate <= 1.0
    assert "only 6 anomaly-free images" in cal.warnings[0]


def test_calibrate_replaces_thresholds_and_keeps_the_history(tiny_bundle, demo_data, tmp_path):
    b = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, b)
    before = load_bundle(b).manifest.calibration
    # train/good: the model's 16 training images, left out (by content) with a warning; test/good: 6 new ones
    r = edgead_cli(
        "calibrate",
        b,
        "--good",
        demo_data / "train" / "good",
        "--good",
        demo_data / "test" / "good",
        "--target-frr",
        "0.05",
        "--backend",
        "onnxruntime-cpu",
    )
    assert r.returncode == 0, r.stderr
    assert "warning: left out 16 of the given images: they are the model's own training images" in r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 6 and out["previous_image_threshold"] == pytest.approx(before.image.threshold)
    m = load_bundle(b).manifest  # still loads and verifies
    assert m.calibration.n_images == 6 and m.calibration.target_frr == 0.05
    assert m.calibration.image.threshold == pytest.approx(out["image_threshold"])
    (old,) = m.provenance["calibration_history"]
    assert old["image_threshold"] == pytest.approx(before.image.threshold) and old["n_images"] == 6


def test_calibrate_on_training_images_only_is_refused(tiny_bundle, demo_data, tmp_path):
    b = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, b)
    before = (b / "manifest.yaml").read_bytes()
    r = edgead_cli("calibrate", b, "--good", demo_data / "train" / "good", "--backend", "onnxruntime-cpu")
    assert r.returncode == 1 and r.stderr.strip() == (
        "error: all 16 images given are the model's own training images "
        "(same content); calibrate on good parts it was not trained on"
    )
    assert (b / "manifest.yaml").read_bytes() == before


def test_calibrate_on_a_live_source_needs_a_frame_count(tiny_bundle, tmp_path):
    from edgead.core.config import CalibrationConfig
    from edgead.core.errors import DataError
    from edgead.runtime import calibration, sources

    class Live(sources.FrameSource):
        live = True

        def frames(self):
            yield from ()

    orig = sources.open_source
    sources.open_source = lambda spec: Live("camera 0")
    try:
        with pytest.raises(DataError, match="live source: give --max-frames"):
            calibration.calibrate(load_bundle(tiny_bundle), calibration.good_frames(["0"]), CalibrationConfig(), "0")
    finally:
        sources.open_source = orig


def test_evaluation_leaves_out_training_images(demo_data, tmp_path, caplog):
    """Plain folder layout: good/ holds the training and calibration images too; they must not count as test
    images (the calibration images' false-reject rate is the one the threshold was fitted to give)."""
    from edgead import Detector
    from edgead.core.config import load_config
    from edgead.core.errors import DataError
    from edgead.data.datasets import load_dataset
    from edgead.evaluation.evaluate import evaluate
    from edgead.export.flow import export_run
    from edgead.training import train

    folder = tmp_path / "folder"
    shutil.copytree(demo_data / "train" / "good", folder / "good")
    shutil.copytree(demo_data / "test" / "hole", folder / "hole")
    cfg = load_config(
        None,
        [
            "method=patchcore",
            f"data.path={folder}",
            "data.image_size=64",
            "data.validation_fraction=0.25",
            "patchcore.coreset_fraction=0.05",
        ],
    )
    train(cfg, tmp_path / "run", progress=False)
    bundle, _ = export_run(tmp_path / "run", tmp_path / "pc.edgead", parity_images=2, progress=False)
    with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
        with pytest.raises(DataError, match="the others trained the model or set its threshold"):
            evaluate(det, load_dataset(folder, validation_fraction=0.0), progress=False)  # every good one was used
        wider = tmp_path / "wider"  # the same folder and six good parts the model never saw
        shutil.copytree(folder, wider)
        for f in (demo_data / "test" / "good").glob("*.png"):
            shutil.copy(f, wider / "good" / f"new_{f.name}")
        report = evaluate(det, load_dataset(wider, validation_fraction=0.0), progress=False).report
    split = load_dataset(folder, validation_fraction=0.25)
    n_train, n_val = len(split.train), len(split.validation)
    assert report["excluded_training_images"] == n_train and report["excluded_calibration_images"] == n_val
    assert report["test_images"]["good"] == 6
    assert f"{n_train} of 25 test images were training images" in caplog.text
    assert f"{n_val} of {25 - n_train} test images set the threshold" in caplog.text


def _calibrated(good):
    import numpy as np

    from edgead.core.config import CalibrationConfig
    from edgead.runtime.calibration import calibration_from_scores

    good = np.asarray(good, float)
    return calibration_from_scores(good, good, 0.0, CalibrationConfig(), "test")


def test_a_threshold_that_misses_synthetic_anomalies_says_how_many_good_images_would_fix_it(caplog):
    """Export's advice: above 5% misses, the number of good images the tolerance rule would need (found by
    search on the exact factor), or that no number would."""
    import numpy as np

    from edgead.export.flow import advise_sensitivity
    from edgead.runtime.calibration import images_for_misses, tolerance_factor

    rng = np.random.default_rng(0)
    good = np.exp(np.array([-0.1, 0.0, 0.1]))  # 3 images: k = 10.6, the threshold sits at exp(1.06)
    synthetic = np.exp(rng.normal(0.8, 0.05, 40))  # well separated from the good scores, below it
    cal = _calibrated(good)
    advise_sensitivity(cal, good, synthetic, "grid")
    assert cal.synthetic_miss_rate == 1.0
    needed = images_for_misses(good, synthetic, cal, 0.05)
    y, room = np.log(good), np.quantile(np.log(synthetic), 0.05)
    for n, ok in ((needed - 1, False), (needed, True)):  # the smallest n that is enough
        assert (y.mean() + tolerance_factor(n, 0.01, 0.95) * y.std(ddof=1) < room) == ok
    assert f"with about {needed} anomaly-free images ({needed - 3} more)" in cal.warnings[-1]
    assert "the threshold of grid misses 100% of the synthetic anomalies" in caplog.text
    assert "edgead calibrate BUNDLE --good DIR" in caplog.text

    overlapping = np.exp(rng.normal(0.05, 0.1, 40))  # no number of good images separates these
    cal = _calibrated(good)
    advise_sensitivity(cal, good, overlapping)
    assert images_for_misses(good, overlapping, cal, 0.05) is None
    assert "more good images would not bring that to 5%" in cal.warnings[-1]

    cal = _calibrated(np.exp(rng.normal(0.0, 0.1, 30)))  # enough images and separated: nothing to say
    before = list(cal.warnings)
    advise_sensitivity(cal, good, np.exp(rng.normal(2.0, 0.05, 40)))
    assert cal.synthetic_miss_rate == 0.0 and cal.warnings == before


def test_evaluation_says_when_good_images_score_far_outside_the_calibration(caplog):
    """A hazelnut bundle on grid images: the good images score above the threshold and every calibration image."""
    from types import SimpleNamespace

    import numpy as np

    from edgead.evaluation.evaluate import calibration_mismatch

    cal = SimpleNamespace(image=SimpleNamespace(threshold=2.0, max=1.5), n_images=20)
    assert calibration_mismatch(np.array([1.0, 1.2, 1.4, 2.5]), cal) is None  # the same product
    assert calibration_mismatch(np.array([1.0, 1.9, 1.9, 2.5]), cal) is None  # median below the threshold
    w = calibration_mismatch(np.array([2.6, 3.0, 3.5, 1.0]), cal)
    assert w.startswith("the good test images score far above this bundle's calibration (3 of 4 above the threshold 2")
    assert "the product or the imaging setup looks different" in w
    assert calibration_mismatch(np.array([3.0]), None) is None


@pytest.fixture(scope="module")
def pc_bundle(method_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("poison") / "pc.edgead"
    shutil.copytree(method_bundle("patchcore")[0], root)
    return root


def test_defective_parts_among_the_good_images_are_left_out_by_what_the_bundle_knows(pc_bundle, demo_data, tmp_path):
    """Two defective parts among eight "good" images: the bundle's own good scores give the spread of good parts,
    so they are found (though eight images alone cannot show it), named and left out: the threshold is the one
    the six good parts give. --refuse-outliers refuses; --keep-suspects uses them, and the threshold rises."""
    from edgead.core.config import CalibrationConfig
    from edgead.core.errors import DataError
    from edgead.runtime.calibration import recalibrate

    cal = load_bundle(pc_bundle).manifest.calibration
    assert len(cal.good_scores) == cal.n_images and len(cal.synthetic_scores) > 0  # what export recorded
    good = sorted((demo_data / "test" / "good").glob("*.png"))
    bad = [sorted((demo_data / "test" / d).glob("*.png"))[0] for d in ("hole", "stain")]
    mixed, clean = tmp_path / "mixed", tmp_path / "clean"
    for folder, files in ((mixed, good + bad), (clean, good)):
        folder.mkdir()
        for f in files:
            (folder / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())

    def threshold(folder, **kw):
        b = tmp_path / f"b{len(list(tmp_path.iterdir()))}.edgead"
        shutil.copytree(pc_bundle, b)
        _, new, _ = recalibrate(load_bundle(b), [str(folder)], CalibrationConfig(), backend="onnxruntime-cpu", **kw)
        return new

    honest, poisoned = threshold(clean), threshold(mixed)
    # the same six good parts (scored in other batches: ONNX Runtime sums differently by about 1e-6)
    assert poisoned.n_images == 6 and poisoned.image.threshold == pytest.approx(honest.image.threshold, rel=1e-4)
    assert "2 of the 8 given images look like defective parts" in poisoned.warnings[0]
    assert "hole_000.png" in poisoned.warnings[0] and "stain_000.png" in poisoned.warnings[0]
    with pytest.raises(DataError, match="would pass 100% of the bundle's synthetic anomalies"):
        threshold(mixed, keep_suspects=True)  # the defects kept raise it past what the bundle catches
    kept = threshold(mixed, keep_suspects=True, accept_misses=True)
    assert kept.n_images == 8 and kept.image.threshold > honest.image.threshold
    b = tmp_path / "refused.edgead"
    shutil.copytree(pc_bundle, b)
    before = (b / "manifest.yaml").read_bytes()
    r = edgead_cli("calibrate", b, "--good", mixed, "--refuse-outliers", "--backend", "onnxruntime-cpu")
    assert r.returncode == 1 and "look like defective parts" in r.stderr and "nothing was changed" in r.stderr
    assert (b / "manifest.yaml").read_bytes() == before
    r = edgead_cli("calibrate", b, "--good", mixed, "--backend", "onnxruntime-cpu")
    assert r.returncode == 0 and r.stderr.count("look like defective parts") == 1  # said once
    assert json.loads(r.stdout)["images"] == 6


def test_a_threshold_that_would_pass_what_the_bundle_catches_is_refused(pc_bundle, demo_data, tmp_path):
    """The wrong folder (defective parts only): they score above every calibration image, which is said, and a
    threshold that would pass most of the synthetic anomalies the current one catches is refused unless accepted."""
    import numpy as np

    from edgead.core.config import CalibrationConfig
    from edgead.core.errors import DataError
    from edgead.runtime.calibration import recalibrate

    b = tmp_path / "b.edgead"
    shutil.copytree(pc_bundle, b)
    bundle = load_bundle(b)
    cal = bundle.manifest.calibration
    # a bundle whose threshold catches its synthetic anomalies (the tiny one's 6 images set it too high to): the
    # guard's case
    cal.image.threshold = cal.image.max * 1.1
    cal.synthetic_scores = [float(cal.image.threshold * f) for f in np.linspace(1.05, 1.5, 20)]
    bundle.save_manifest()
    defects = [str(demo_data / "test" / d) for d in ("hole", "stain", "scratch")]
    before = (b / "manifest.yaml").read_bytes()
    with pytest.raises(
        DataError,
        match=r"would pass \d+% of the bundle's synthetic anomalies, of which the current "
        r"one passes 0%.*--accept-misses \(nothing was changed\)",
    ):
        recalibrate(load_bundle(b), defects, CalibrationConfig(rule="k_sigma", k_sigma=3.0), backend="onnxruntime-cpu")
    assert (b / "manifest.yaml").read_bytes() == before
    _, new, _ = recalibrate(
        load_bundle(b),
        defects,
        CalibrationConfig(rule="k_sigma", k_sigma=3.0),
        backend="onnxruntime-cpu",
        accept_misses=True,
    )
    assert any("score above every good image the bundle was calibrated on" in w for w in new.warnings)
    assert new.synthetic_miss_rate > 0.5


@pytest.mark.parametrize("method", ["d3ad", "diad"])
def test_the_default_threshold_also_rests_on_training_images_left_out_of_the_patch_bank(
    method, method_bundle, tmp_path
):
    """The latent methods' kNN term scores each training image without its own bank rows (their reconstruction has
    seen it); with cross_fit=false the threshold comes from the held-out images alone, as before 0.10."""
    from edgead.export.flow import export_run

    def calibration(manifest):  # DiAD keeps one per product, also for a bundle of one
        return manifest.calibration or next(iter(manifest.products.values()))

    root, _ = method_bundle(method)
    cal = calibration(load_bundle(root).manifest)
    assert cal.n_images == 6 + 16 and "16 training images, each left out of the memory bank" in cal.source
    plain, _ = export_run(
        root.parent / "run",
        tmp_path / "plain.edgead",
        parity_images=2,
        progress=False,
        overrides=["calibration.cross_fit=false"],
    )
    assert calibration(plain.manifest).n_images == 6
