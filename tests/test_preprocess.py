"""One pre-processing definition: a camera frame reaches the graphs exactly as training images do."""

import numpy as np

from edgead import Detector
from edgead.core.preprocess import Preprocess, to_batch, to_image
from edgead.data.io import write_image
from edgead.training.data import load_images, numpy_batch


def _camera_frame() -> np.ndarray:
    y, x = np.mgrid[0:720, 0:1280]
    rng = np.random.default_rng(0)
    frame = np.stack([(x * 255 // 1279), (y * 255 // 719), (x + y) % 256], -1) + rng.integers(0, 30, (720, 1280, 3))
    return np.clip(frame, 0, 255).astype(np.uint8)


def test_a_1280x720_frame_gives_the_training_input(tiny_bundle, tmp_path):
    frame = _camera_frame()
    write_image(tmp_path / "frame.png", frame)
    spec = Preprocess.for_size(64)
    trained = numpy_batch(load_images([tmp_path / "frame.png"], spec), spec).numpy()  # training's path
    with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
        assert det.manifest.preprocess == spec  # what export wrote is what training used
        with det.record_stages() as calls:
            det.predict(frame, color="rgb")
    seen = next(feeds["image"] for stage, feeds, _ in calls if stage == "segmenter")
    np.testing.assert_array_equal(seen, trained)


def test_round_trip_to_image():
    spec = Preprocess.for_size(32)
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_image(to_batch([rgb], spec)[0], spec), rgb)
