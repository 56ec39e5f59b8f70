import cv2
import numpy as np
import pytest

from edgead import Detector, load_bundle
from edgead.core.config import CalibrationConfig
from edgead.core.errors import BackendError, ConfigError, InputError
from edgead.core.scoring import image_scores, normalise, normalise_score, pooled_max, smooth, top_k_mean
from edgead.runtime.backends import choose_backend
from edgead.runtime.calibration import fit


@pytest.fixture(scope="module")
def detector(tiny_bundle):
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as d:
        yield d


def _frame(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_same_frame_same_score(detector):
    f = _frame()
    a, b = detector.predict(f), detector.predict(f.copy())
    assert a.score == b.score
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)


def test_batch_equals_single(detector):
    frames = [_frame(i) for i in range(3)]
    batch = detector.predict_batch(frames)
    for f, r in zip(frames, batch):
        assert r.score == pytest.approx(detector.predict(f).score, abs=1e-6)


def test_result_fields(detector, demo_data):
    path = next((demo_data / "test" / "hole").iterdir())
    r = detector.predict(path)
    assert r.source == str(path)
    assert r.anomaly_map.shape == (64, 64) and r.anomaly_map.dtype == np.float32
    assert r.mask.dtype == bool and 0.0 <= r.normalised_score <= 1.0
    assert r.is_anomalous == (r.score > detector.threshold)
    assert r.is_anomalous == (r.normalised_score > 0.5) or r.normalised_score == 0.5
    for part in ("preprocess", "denoiser_step", "segmenter", "postprocess", "total"):
        assert r.latency_ms[part] >= 0
    assert r.overlay().shape == (64, 64, 3)
    d = r.to_dict()
    assert set(d) >= {"score", "normalised_score", "is_anomalous", "latency_ms"}


def test_maps_follow_the_input_size(detector):
    r = detector.predict(_frame(size=64)[:48])  # non-square, not the model size
    assert r.anomaly_map.shape == (48, 64) and r.mask.shape == (48, 64)
    assert r.overlay(color="rgb").shape == (48, 64, 3)


def test_colour_order_is_explicit(detector):
    rgb = _frame(3)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert detector.predict(rgb, color="rgb").score == detector.predict(bgr, color="bgr").score
    gray = rgb[..., 0]
    assert detector.predict(gray).anomaly_map.shape == gray.shape


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64, 3), np.float32), "expected a uint8 image array, got dtype float32"),
        (np.zeros((64, 64, 2), np.uint8), r"shape HxW, HxWx3 or HxWx4, got \(64, 64, 2\)"),
        (np.zeros((2, 2, 3), np.uint8), "too small"),
        ("does/not/exist.png", "image not found"),
        (42, "expected an image path or a numpy array, got int"),
    ],
)
def test_bad_input_is_named(detector, image, message):
    with pytest.raises(InputError, match=message):
        detector.predict(image)


def test_backend_checks_inputs(detector):
    den = detector.backends["denoiser_step"]
    x = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(BackendError, match=r"received inputs \['x_t'\], expected \['t', 'x_t'\]"):
        den.run({"x_t": x})
    with pytest.raises(BackendError, match="input 't' has dtype int64, expected float32"):
        den.run({"x_t": x, "t": np.zeros(2, np.int64)})
    with pytest.raises(BackendError, match=r"input 'x_t' has shape \(2, 3, 32, 32\)"):
        den.run({"x_t": np.zeros((2, 3, 32, 32), np.float32), "t": np.zeros(2, np.float32)})


def test_sessions_do_not_spin_between_stages(detector):
    """A stage's idle ONNX Runtime threads must not busy-wait on the cores the next stage needs (docs §14)."""
    from edgead.runtime.backends.onnxruntime import OnnxRuntimeBackend

    for backend in detector.backends.values():
        opts = backend.session.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    entry = detector.bundle.manifest.stages[0]
    spinning = OnnxRuntimeBackend(detector.bundle.path(entry.file), entry.inputs, entry.outputs, spinning=True)
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ONNX Runtime's default: spinning
        spinning.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_backend_choice(tiny_bundle, monkeypatch):
    import edgead.runtime.backends.onnxruntime as ort_backend

    b = load_bundle(tiny_bundle)
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["CPUExecutionProvider"])
    choice = choose_backend("auto", b)  # no engines in the bundle: native TensorRT is skipped with a reason
    assert choice.name == "onnxruntime-cpu"
    assert choice.reason == (
        "CPUExecutionProvider available (skipped tensorrt, onnxruntime-tensorrt, onnxruntime-cuda; -v says why)"
    )
    with pytest.raises(BackendError, match="ONNX Runtime has no CUDAExecutionProvider here"):
        choose_backend("onnxruntime-cuda", b)
    with pytest.raises(
        BackendError,
        match=r"^backend must be one of auto, tensorrt, onnxruntime, "
        r"onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu; got 'magic'$",
    ):
        choose_backend("magic", b)


def test_scoring_golden_numbers():
    maps = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    np.testing.assert_allclose(top_k_mean(maps, 3), [14.0, 30.0])
    np.testing.assert_allclose(image_scores(maps, "max"), [15.0, 31.0])
    with pytest.raises(
        ConfigError,
        match=r"^unknown score rule 'median'; registered score rules: max, pooled_max, "
        r"top_k_mean$",
    ):
        image_scores(maps, "median")
    s, k, _ = fit(np.array([1.0, 2.0, 3.0]), CalibrationConfig(rule="k_sigma", k_sigma=2.0))
    assert s.threshold == pytest.approx(2.0 + 2.0 * np.std([1, 2, 3])) and k == 2.0
    # DiAD's score: max after an average pool (stride 1, no padding)
    ramp = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    np.testing.assert_allclose(pooled_max(ramp, 2), [(28 + 29 + 34 + 35) / 4])
    np.testing.assert_allclose(image_scores(ramp, "pooled_max", pool=6), [ramp.mean()])
    assert normalise(s.threshold, s) == pytest.approx(0.5)
    assert normalise(1e9, s) == 1.0 and normalise(-1e9, s) == 0.0  # pixel maps: clipped, for colours
    span = s.max - s.min
    far = normalise_score(s.threshold + np.array([-1, -0.75, -0.5, 0, 0.5, 0.75, 1]) * span, s)
    assert far[3] == pytest.approx(0.5) and np.all(np.diff(far) > 0) and far[0] > 0 and far[-1] < 1  # never flat
    assert normalise_score(1e9, s) == 1.0 and normalise_score(-1e9, s) < 1e-300  # no overflow
    impulse = np.zeros((1, 21, 21), np.float32)
    impulse[0, 10, 10] = 1
    blurred = smooth(impulse, 2.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-3) and blurred[0, 10, 10] < 0.1


@pytest.mark.parametrize(
    "n, frr, conf", [(3, 0.01, 0.95), (5, 0.05, 0.9), (10, 0.01, 0.95), (29, 0.01, 0.95), (200, 0.001, 0.99)]
)
def test_tolerance_factor_is_the_exact_noncentral_t_quantile(n, frr, conf):
    from scipy.stats import nct, norm

    from edgead.runtime.calibration import tolerance_factor

    exact = nct.ppf(conf, n - 1, norm.ppf(1 - frr) * np.sqrt(n)) / np.sqrt(n)
    assert tolerance_factor(n, frr, conf) == pytest.approx(exact, rel=2e-3)


def test_tolerance_threshold_targets_the_false_reject_rate():
    from edgead.runtime.calibration import calibration_from_scores

    rng = np.random.default_rng(0)
    cfg = CalibrationConfig(target_frr=0.05, confidence=0.9, min_images=20)
    misses = []
    for _ in range(200):  # how often does the threshold from 30 good images reject more than 5%?
        scores = rng.lognormal(-3.0, 0.4, 30)
        cal = calibration_from_scores(scores, scores, 0.0, cfg, "test")
        true_frr = 1 - norm_cdf((np.log(cal.image.threshold) + 3.0) / 0.4)
        misses.append(true_frr > 0.05)
    assert cal.transform == "log" and cal.warnings == []
    assert np.mean(misses) <= 0.1 + 0.05  # at most 1 - confidence (plus sampling slack)
    few = calibration_from_scores(np.array([0.1, 0.12, 0.11]), np.array([0.1, 0.12, 0.11]), 0.0, cfg, "test")
    assert few.k > 5 and "only 3 anomaly-free images" in few.warnings[0]
    lo, hi = few.threshold_interval
    assert lo <= few.image.threshold <= hi or hi - lo >= 0


def norm_cdf(x):
    from statistics import NormalDist

    return NormalDist().cdf(float(x))


def test_the_overlay_is_drawn_once_however_many_sinks_ask(tiny_bundle, monkeypatch):
    import edgead.runtime.result as result_module

    drawn = []
    real = result_module.draw_overlay
    monkeypatch.setattr(result_module, "draw_overlay", lambda r, **kw: drawn.append(kw) or real(r, **kw))
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        r = det.predict(np.full((64, 64, 3), 90, np.uint8))
    bgr, rgb = r.overlay(), r.overlay(color="rgb")
    rgb[:] = 0  # a sink that draws on its copy changes nothing for the next
    assert len(drawn) == 1 and np.array_equal(bgr, r.overlay(color="rgb")[..., ::-1])
    r.overlay(alpha=0.3)
    assert len(drawn) == 2


def test_the_sheet_shows_misses_and_false_rejects_beside_right_verdicts(tiny_bundle, demo_data, tmp_path, monkeypatch):
    from edgead import Detector
    from edgead.data.datasets import load_dataset
    from edgead.evaluation import report
    from edgead.evaluation.evaluate import evaluate, save_sheets

    shown = []
    monkeypatch.setattr(report, "sample_sheet", lambda det, run, indices, path: shown.extend(indices) or path)
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        run = evaluate(det, load_dataset(demo_data), progress=False)
        save_sheets(det, run, tmp_path)
        flagged = run.scores > det.threshold
    labels = np.array([s.label for s in run.samples])
    for label in (0, 1):
        ids = np.flatnonzero(labels == label)
        chosen = [i for i in shown if labels[i] == label]
        wrong, right = ids[flagged[ids] != bool(label)], ids[flagged[ids] == bool(label)]
        assert len(chosen) == min(3, len(ids))
        assert bool(set(chosen) & set(wrong)) == bool(len(wrong))  # a wrong verdict is shown when there is one
        if len(wrong) and len(right):  # both kinds, side by side
            assert set(chosen) & set(right)
