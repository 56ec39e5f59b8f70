"""False-reject and miss rates of a bundle for several calibration settings, from one scoring pass.

The held-out good images the bundle was calibrated on (the training run's split) and the test
images are scored once through the runtime; each setting then re-fits the threshold on the held-out
scores (edgead.runtime.calibration, nothing fitted on test images) and counts test decisions.

    python benchmarks/operating_points.py tire.edgead --data ../shared/data/tire --out op.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgead import Detector, load_bundle
from edgead.core.config import CalibrationConfig
from edgead.data.datasets import load_dataset
from edgead.runtime.calibration import calibration_from_scores, run_images

SETTINGS = [
    ("tolerance", 0.01, 0.95),
    ("tolerance", 0.01, 0.5),
    ("tolerance", 0.05, 0.95),
    ("tolerance", 0.05, 0.5),
    ("k_sigma", None, None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--data", required=True)
    ap.add_argument("--product")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    b = load_bundle(a.bundle)
    cfg = b.manifest.provenance["training"]["config"]["data"]
    ds = load_dataset(a.data, cfg["validation_fraction"], cfg["split_seed"])
    test = load_dataset(a.data, validation_fraction=0.0).test
    product = a.product or (ds.name if b.manifest.products else None)
    with Detector(b, backend="onnxruntime-cpu", product=product) as det:
        val_maps, val_scores = run_images(det, [s.path for s in ds.validation])
        _, test_scores = run_images(det, [s.path for s in test])
    labels = np.array([s.label for s in test], bool)
    maxima = val_maps.reshape(len(val_maps), -1).max(1)
    rows = []
    for rule, frr, conf in SETTINGS:
        c = CalibrationConfig(rule=rule, **({"target_frr": frr, "confidence": conf} if frr else {}))
        cal = calibration_from_scores(
            val_scores, maxima, float(val_maps.min()), c, "held-out", b.manifest.scoring.unit_interval
        )
        flagged = test_scores > cal.image.threshold
        rows.append(
            {
                "rule": rule,
                "target_frr": frr,
                "confidence": conf,
                "images": len(val_scores),
                "threshold": cal.image.threshold,
                "false_reject_rate": float(flagged[~labels].mean()),
                "miss_rate": float((~flagged[labels]).mean()),
            }
        )
        print(json.dumps(rows[-1]))
    if a.out:
        a.out.write_text(json.dumps({"bundle": a.bundle, "data": a.data, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
