"""Steady-state streaming: memory over a long looping video, and `run` throughput vs bare predict.

1. Writes a lossless video (FFV1) from a folder of images.
2. Bare loop: ``detector.predict`` on the decoded frames, and the run loop (looping video source,
   JSON-lines and annotated-video sinks) alternate in blocks, so both see the same machine load;
   the report gives frames per second of each and their ratio.
3. Soak: the run loop over ``--frames`` frames of the looping video, resident memory sampled
   every ``--sample-every`` frames; the report gives the growth after warm-up.

    python benchmarks/stream.py --bundle B.edgead --images ../shared/data/tire/test/cut \\
        --frames 10000 --out benchmarks/results/stream.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from make_video import make_video

from edgead.data.io import list_images
from edgead.evaluation.speed import peak_rss_mb
from edgead.line.runner import run_stream
from edgead.line.sinks import JsonlSink, Sink, VideoSink
from edgead.runtime.detector import Detector
from edgead.runtime.sources import open_source


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20  # 64 KiB pages on some arm64 kernels


class MemoryProbe(Sink):
    def __init__(self, every: int):
        self.every, self.n, self.samples = every, 0, []

    def write(self, result) -> None:
        self.n += 1
        if self.n % self.every == 0:
            self.samples.append((self.n, round(current_rss_mb(), 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", required=True, help="folder of frames for the video")
    ap.add_argument("--frames", type=int, default=10_000, help="soak frames (0: throughput only)")
    ap.add_argument("--block", type=int, default=50, help="frames per alternating throughput block")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--sample-every", type=int, default=500)
    ap.add_argument("--backend", default="onnxruntime-cpu")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgead-stream-"))
    video = tmp / "line.mkv"
    frames = make_video(list_images(a.images), video)  # BGR frames, as a camera delivers them
    report: dict = {"bundle": a.bundle, "video_frames": len(frames), "date": time.strftime("%Y-%m-%d")}
    with Detector.load(a.bundle, backend=a.backend) as det:
        report["backend"] = det.backend_name
        bare, loop, piped = [], [], []
        for k in range(a.blocks):  # alternate bare predict, the run loop and the run loop with --pipeline
            t0 = time.perf_counter()
            for i in range(a.block):
                det.predict(frames[(k * a.block + i) % len(frames)])
            bare.append(a.block / (time.perf_counter() - t0))
            for pipeline, fps in ((False, loop), (True, piped)):
                sinks = [JsonlSink(tmp / f"b{k}{pipeline}.jsonl"), VideoSink(tmp / f"b{k}{pipeline}.avi")]
                t0 = time.perf_counter()
                stats = run_stream(
                    det,
                    open_source(str(video), loop=True),
                    sinks,
                    max_frames=a.block,
                    echo=lambda m: None,
                    status_every_s=1e9,
                    pipeline=pipeline,
                )
                fps.append(stats.frames / (time.perf_counter() - t0))
        report["throughput"] = {
            "bare_predict_fps_median": float(np.median(bare)),
            "run_loop_fps_median": float(np.median(loop)),
            "run_pipeline_fps_median": float(np.median(piped)),
            "run_over_bare": float(np.median(loop) / np.median(bare)),
            "run_pipeline_over_bare": float(np.median(piped) / np.median(bare)),
            "blocks": a.blocks,
            "block_frames": a.block,
            "run_sinks": "jsonl + annotated video (MJPG .avi)",
        }
        print(json.dumps(report["throughput"]), flush=True)
        if a.frames == 0:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(report, indent=2))
            return
        probe = MemoryProbe(a.sample_every)
        sinks = [JsonlSink(tmp / "soak.jsonl"), VideoSink(tmp / "soak.avi"), probe]
        t0 = time.perf_counter()
        stats = run_stream(
            det,
            open_source(str(video), loop=True),
            sinks,
            max_frames=a.frames,
            echo=lambda m: print(m, flush=True),
            status_every_s=60,
        )
        lines = sum(1 for _ in open(tmp / "soak.jsonl"))
    samples = probe.samples
    warm = samples[1][1] if len(samples) > 1 else samples[0][1]
    report["soak"] = {
        "frames": stats.frames,
        "seconds": round(time.perf_counter() - t0, 1),
        "jsonl_lines": lines,
        "rss_mb_samples": samples,
        "rss_mb_after_warmup": warm,
        "rss_mb_end": samples[-1][1],
        "growth_mb_after_warmup": round(samples[-1][1] - warm, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "latency_ms": stats.latency_ms,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["soak"], indent=2))


if __name__ == "__main__":
    main()
