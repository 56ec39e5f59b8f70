"""Per part, with and without smoothing over time: false rejects and misses of parts seen in several frames.

A line's camera sees each part in several frames. This builds that stream from a set's test images: every part
(each defective image once, each good image ``--good-passes`` times) passes in ``--frames-per-part`` frames, each a
copy of its image moved by up to 2 pixels, with a small gain change and sensor noise, and, with probability
``--glitch``, a frame of three times the noise (a light flicker, a compression burst). The frames are judged once;
every smoothing policy then decides the same frame results, part by part (runtime/temporal.py, ``part_frames``).

Frame noise moves scores (a bundle calibrated on clean PNGs rejects most noisy frames of good parts), so the
threshold is calibrated as a line would do it: the calibration rule of the bundle (tolerance limit, 1% false
rejects per frame) on frames of ``--calibrate-on`` good *training* images of the set made the same way. No test
image is used for it. Training images score a little lower than unseen good parts, so this errs towards false
rejects.

    python benchmarks/temporal_parts.py tire-patchcore.edgead ../shared/data/tire \\
        --noise 2:0 6:0.1 --out benchmarks/results/temporal_parts_tire_patchcore.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from edgead import Detector
from edgead.core.config import CalibrationConfig
from edgead.core.scoring import normalise_score
from edgead.data.io import read_image
from edgead.runtime.calibration import fit
from edgead.runtime.temporal import PartDecision, Smoothing, TemporalDecider

POLICIES = {
    "frame by frame": Smoothing(),
    "ema=0.5": Smoothing(ema=0.5),
    "votes=2/3": Smoothing(votes=2, window=3),
    "votes=3/5": Smoothing(votes=3, window=5),
    "ema=0.5,leave=0.45": Smoothing(ema=0.5, leave=0.45),
}


def part_frames(image: np.ndarray, n: int, sigma: float, glitch: float, rng: np.random.Generator):
    """``n`` looks at one part: shifted by up to 2 px, gain within ±3%, Gaussian noise, sometimes a glitch."""
    h, w = image.shape[:2]
    for _ in range(n):
        dx, dy = rng.integers(-2, 3, size=2)
        moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        s = sigma * (3.0 if rng.random() < glitch else 1.0)
        noisy = moved.astype(np.float32) * rng.normal(1.0, 0.03) + rng.normal(0.0, s, moved.shape)
        yield np.clip(noisy, 0, 255).astype(np.uint8)


def decide(frames: list[tuple[int, bool, object]], smoothing: Smoothing, per_part: int) -> dict:
    """Parts decided by ``smoothing`` on the judged frames (part id, defective, Result)."""
    decider = TemporalDecider(Smoothing(**{**smoothing.__dict__, "part_frames": per_part}))
    parts: list[PartDecision] = []
    events = 0
    for _, _, result in frames:
        for out in decider.update(result):
            if isinstance(out, PartDecision):
                parts.append(out)
            else:
                events += 1
    truth = [defective for i, (_, defective, _) in enumerate(frames) if i % per_part == 0]
    good = [p.is_anomalous for p, d in zip(parts, truth) if not d]
    bad = [p.is_anomalous for p, d in zip(parts, truth) if d]
    return {
        "false_rejects": sum(good),
        "good_parts": len(good),
        "false_reject_rate": sum(good) / len(good),
        "misses": len(bad) - sum(bad),
        "defective_parts": len(bad),
        "miss_rate": (len(bad) - sum(bad)) / len(bad),
        "events": events,
        "events_per_rejected_part": events / max(1, sum(bad) + sum(good)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("data", type=Path, help="a set in MVTec layout (its test/ folder is used)")
    p.add_argument("--frames-per-part", type=int, default=5)
    p.add_argument("--good-passes", type=int, default=4)
    p.add_argument("--noise", nargs="+", default=["2:0", "6:0.1"], help="SIGMA:GLITCH pairs, one stream each")
    p.add_argument("--calibrate-on", type=int, default=40, help="good training images (the last ones, sorted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    files = sorted(a.data.glob("test/*/*.png"))
    passes = {True: 1, False: a.good_passes}
    parts = [(f, f.parent.name != "good") for f in files for _ in range(passes[f.parent.name != "good"])]
    calibration_files = sorted(a.data.glob("train/good/*.png"))[-a.calibrate_on :]
    report = {"bundle": str(a.bundle), "data": a.data.name, "frames_per_part": a.frames_per_part, "streams": []}
    with Detector.load(a.bundle, backend="onnxruntime-cpu") as detector:
        report["exported_threshold"] = detector.threshold
        for spec in a.noise:
            sigma, glitch = (float(x) for x in spec.split(":"))
            rng = np.random.default_rng(a.seed)
            good = [
                detector.predict_rgb([image], keep_image=False)[0].score
                for f in calibration_files
                for image in part_frames(read_image(f), a.frames_per_part, sigma, glitch, rng)
            ]
            stats, _, _ = fit(np.asarray(good), CalibrationConfig())
            order = rng.permutation(len(parts))
            frames = []
            for k, i in enumerate(order):
                path, defective = parts[i]
                for image in part_frames(read_image(path), a.frames_per_part, sigma, glitch, rng):
                    result = detector.predict_rgb([image], keep_image=False)[0]
                    result.frame_index, result.threshold = len(frames), stats.threshold
                    result.normalised_score = float(normalise_score(result.score, stats))
                    result.is_anomalous = result.score > stats.threshold
                    frames.append((k, defective, result))
            frame_alarms = [r.is_anomalous for _, d, r in frames if not d]
            row = {
                "sigma": sigma,
                "glitch": glitch,
                "frames": len(frames),
                "threshold": stats.threshold,
                "calibration_frames": len(good),
                "good_frame_false_alarm_rate": sum(frame_alarms) / len(frame_alarms),
                "policies": {name: decide(frames, s, a.frames_per_part) for name, s in POLICIES.items()},
            }
            report["streams"].append(row)
            print(f"sigma {sigma} glitch {glitch}: {len(frames)} frames")
            for name, r in row["policies"].items():
                print(
                    f"  {name:22s} false rejects {r['false_rejects']}/{r['good_parts']} "
                    f"misses {r['misses']}/{r['defective_parts']} events {r['events']}"
                )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
