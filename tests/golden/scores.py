"""Golden scores: the tiny bundle of every method, trained and exported from the generated demo data with the
settings of edgead 0.8, scored on the demo's test images. Run with an edgead on the path, it prints the scores;
``tests/test_golden.py`` compares today's with those edgead 0.8 (c9ef5ab) gave, written in scores.json, under the
numpy and OpenCV of constraints/cpu.txt (2.4.6 and 5.1.0.95 since edgead 0.11): the tiny models learn from generated
images, and OpenCV 4.11 rounded a few of their pixels the other way, which 30 training steps turn into scores 0.09
apart.

    PYTHONPATH=<an edgead checkout> python tests/golden/scores.py OUT_FOLDER > scores.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TINY = ["data.image_size=64", "train.device=cpu", "train.seed=0"]
SETTINGS = {
    # PatchCore and the latent methods' kNN term as edgead 0.8 made them (0.9 changed their defaults)
    "patchcore": ["patchcore.coreset_fraction=0.05"],
    "diffusionad": [
        "model.preset=tiny",
        "train.batch_size=4",
        "train.learning_rate=1e-3",
        "train.steps=30",
        "train.checkpoint_every=1000",
    ],
    "d3ad": [
        "model.preset=tiny",
        "d3ad.knn_k=5",
        "train.batch_size=4",
        "train.steps=20",
        "d3ad.knn.coreset_fraction=0.01",
    ],
    "diad": [
        "model.preset=tiny",
        "train.batch_size=4",
        "diad.start_candidates=[40, 80]",
        "train.steps=20",
        "diad.knn.coreset_fraction=0.01",
    ],
}
OLD_DESCRIPTOR = {
    "patchcore": ["patchcore.aggregation=pool_first", "calibration.cross_fit=false"],
    "d3ad": ["d3ad.knn.aggregation=pool_first", "calibration.cross_fit=false"],
    "diad": ["diad.knn.aggregation=pool_first"],
}
"""What edgead 0.9 needs to be told to describe patches as 0.8 did, and 0.10 to calibrate PatchCore on the held-out
images alone (0.8 knows no such keys: it only did this)."""


def scores(out: Path) -> dict:
    from edgead import Detector
    from edgead.core.config import load_config
    from edgead.data.demo import make_demo_dataset
    from edgead.export.flow import export_run
    from edgead.training import train

    data = make_demo_dataset(out / "data", size=64, n_train=16, n_val=6, n_test_good=6, n_per_defect=3)
    try:
        import edgead.core.fusion as fusion

        newer = hasattr(fusion.PatchKnnConfig(), "aggregation")
    except ImportError:
        newer = False
    images = sorted((data / "test").rglob("*.png"))
    result = {}
    for name, settings in SETTINGS.items():
        overrides = [f"method={name}", f"data.path={data}", *TINY, *settings] + (
            OLD_DESCRIPTOR.get(name, []) if newer else []
        )
        train(load_config(None, overrides), out / name, progress=False)
        bundle, _ = export_run(out / name, out / f"{name}.edgead", parity_images=2, progress=False)
        with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
            result[name] = {
                "image_threshold": bundle.manifest.calibration.image.threshold if bundle.manifest.calibration else None,
                "scores": [float(det.predict(f).score) for f in images],
            }
    return result


if __name__ == "__main__":
    print(json.dumps(scores(Path(sys.argv[1])), indent=1))
