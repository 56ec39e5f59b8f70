"""A line integration to start from: inspect each part, pulse a reject output on an anomaly.

    python examples/reject_on_anomaly.py --bundle tire.edgead --camera 0
    python examples/reject_on_anomaly.py --bundle tire.edgead --source line.mp4 --dry-run

Replace ``RejectGate.pulse`` with your PLC / GPIO / fieldbus call. Needs only the runtime
(pip install "edgead[cpu]" or "edgead[gpu]"), not PyTorch.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2

from edgead import Detector, Result

log = logging.getLogger("line")


class RejectGate:
    """Stand-in for the actuator that diverts a bad part."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.pulses = 0

    def pulse(self, result: Result) -> None:
        self.pulses += 1
        action = "would reject" if self.dry_run else "REJECT"
        log.warning("%s frame %s (score %.2f)", action, result.frame_index, result.normalised_score)
        # e.g. gpio.output(REJECT_PIN, 1); time.sleep(0.05); gpio.output(REJECT_PIN, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int)
    src.add_argument("--source")
    ap.add_argument("--evidence", type=Path, default=Path("rejects"), help="folder for images of rejected parts")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--product", help="the product on this line, for a bundle that serves several (DiAD)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    gate = RejectGate(a.dry_run)
    a.evidence.mkdir(parents=True, exist_ok=True)

    def on_result(r: Result) -> None:  # called for every frame, before the generator yields it
        if r.is_anomalous:
            gate.pulse(r)
            cv2.imwrite(str(a.evidence / f"{int(time.time() * 1000)}_{r.frame_index}.jpg"), r.overlay())

    with Detector.load(a.bundle, product=a.product) as detector:  # backend auto: TensorRT > ORT-CUDA > ORT-CPU
        log.info("%s on %s, threshold %.4f", detector.method, detector.backend_name, detector.threshold)
        n = 0
        for result in detector.stream(a.camera if a.camera is not None else a.source, on_result=on_result):
            n += 1
            if n % 100 == 0:
                log.info(
                    "%d parts inspected, %d rejected, last latency %.1f ms", n, gate.pulses, result.latency_ms["total"]
                )
    log.info("done: %d parts, %d rejected", n, gate.pulses)


if __name__ == "__main__":
    main()
