"""Load test of ``edgead serve`` on loopback: 1, 4, 16, 64 concurrent clients against one local Detector.

Starts ``edgead serve BUNDLE`` (a real Triton) on free loopback ports, then for each number of clients
runs that many threads, each with its own RemoteDetector (its own gRPC channel), sending ``--frames``
frames one after the other (a camera PC's loop). Per round: throughput, per-request latency p50/p99,
the batch sizes Triton formed (its statistics API), CPU and peak memory of the server's processes, and
the checks: every request answered once, in order per client, score and decision against the local
Detector on the same frame (scored alone). The baseline is the same frames through one Detector in
this process, run in the same session.

    python benchmarks/serve_load.py --bundle tire.edgead --images ../shared/data/tire/test/cut \\
        --clients 1 4 16 64 --frames 20 --out benchmarks/results/serve
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from edgead import Detector, RemoteDetector
from edgead.data.io import list_images, read_image
from edgead.serving.server import free_ports


def start_server(bundle: str, max_batch: int, queue_delay_ms: float, log: Path) -> tuple[subprocess.Popen, dict]:
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgead.cli",
            "serve",
            bundle,
            "--name",
            "m",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--max-batch",
            str(max_batch),
            "--queue-delay-ms",
            str(queue_delay_ms),
            "--reload-every",
            "0",
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"edgead serve did not start; see {log}")
    return proc, json.loads(line)


def batch_counts(client) -> dict[int, int]:
    stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


class TreeProbe:
    """CPU seconds and peak resident memory of a process and its children (Triton and its Python stubs)."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak_mb, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def procs(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            rss = 0
            for p in self.procs():
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.peak_mb = max(self.peak_mb, rss / 2**20)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def round_of(
    url: str, clients: int, frames: int, images: list[np.ndarray], expected: list[tuple[float, bool]], tolerance: float
) -> dict:
    detectors = [RemoteDetector(url, model="m", reconnect_attempts=0) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    answers: list[list[tuple[int, float, bool]]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        det = detectors[c]
        start.wait()
        for i in range(frames):
            k = (c * 7 + i) % len(images)
            t = time.perf_counter()
            try:
                r = det.predict_rgb([images[k]], keep_image=False)[0]
            except Exception as exc:  # counted, reported
                errors.append(f"client {c} frame {i}: {exc}")
                continue
            latencies[c].append((time.perf_counter() - t) * 1e3)
            answers[c].append((k, r.score, r.is_anomalous))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for d in detectors:
        d.close()
    lat = np.concatenate([np.asarray(x) for x in latencies if x]) if any(latencies) else np.zeros(1)
    n = sum(len(a) for a in answers)
    in_order = all(
        [k for k, _, _ in a] == [(c * 7 + i) % len(images) for i in range(frames)] for c, a in enumerate(answers)
    )
    diffs = [abs(s - expected[k][0]) / max(abs(expected[k][0]), 1e-12) for a in answers for k, s, _ in a]
    exact = sum(s == expected[k][0] for a in answers for k, s, _ in a)
    flips = sum(d != expected[k][1] for a in answers for k, _, d in a)
    return {
        "clients": clients,
        "frames": n,
        "sent": clients * frames,
        "errors": errors[:5],
        "n_errors": len(errors),
        "wall_s": round(wall, 2),
        "frames_per_s": round(n / wall, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p99": round(float(np.percentile(lat, 99)), 1)},
        "answered_once_in_order": in_order and n == clients * frames,
        "scores_identical": exact,
        "max_relative_score_difference": float(max(diffs, default=0.0)),
        "within_tolerance": all(d <= tolerance for d in diffs),
        "decision_flips": flips,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", required=True, help="Folder of frames (sent at their own size).")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--frames", type=int, default=20, help="Frames each client sends.")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue-delay-ms", type=float, default=2.0)
    ap.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="Relative score difference allowed for a frame "
        "batched with others (ONNX Runtime's kernels sum in another order for another batch size).",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = [read_image(p) for p in list_images(args.images)][:32]

    local = Detector.load(args.bundle)
    expected = [(r.score, r.is_anomalous) for r in (local.predict_rgb([im])[0] for im in images)]
    local_lat = []
    t0 = time.perf_counter()
    n_local = max(args.frames, 2 * len(images))
    for i in range(n_local):
        t = time.perf_counter()
        local.predict_rgb([images[i % len(images)]], keep_image=False)
        local_lat.append((time.perf_counter() - t) * 1e3)
    local_fps = n_local / (time.perf_counter() - t0)
    local.close()
    baseline = {
        "frames": n_local,
        "frames_per_s": round(local_fps, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(local_lat, 50)), 1),
            "p99": round(float(np.percentile(local_lat, 99)), 1),
        },
    }
    print(f"local Detector: {baseline}", flush=True)

    import tritonclient.grpc as grpc

    proc, info = start_server(args.bundle, args.max_batch, args.queue_delay_ms, out / "tritonserver.log")
    stats_client = grpc.InferenceServerClient(info["grpc"].removeprefix("grpc://"))
    rounds = []
    try:
        with TreeProbe(proc.pid) as probe:
            for c in args.clients:
                before, cpu0 = batch_counts(stats_client), probe.cpu_s()
                probe.peak_mb = 0.0
                r = round_of(info["grpc"], c, args.frames, images, expected, args.tolerance)
                time.sleep(0.5)  # Triton updates its statistics after the response
                after = batch_counts(stats_client)
                formed = {
                    b: after.get(b, 0) - before.get(b, 0) for b in sorted(after) if after.get(b, 0) > before.get(b, 0)
                }
                executions = sum(formed.values())
                r.update(
                    {
                        "batches_formed": formed,
                        "mean_batch": round(r["frames"] / max(executions, 1), 2),
                        "server_cpu_cores": round((probe.cpu_s() - cpu0) / r["wall_s"], 2),
                        "server_peak_rss_mb": round(probe.peak_mb, 0),
                        "ratio_to_local": round(r["frames_per_s"] / local_fps, 2),
                    }
                )
                rounds.append(r)
                print(json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    report = {
        "bundle": args.bundle,
        "images": args.images,
        "max_batch": args.max_batch,
        "queue_delay_ms": args.queue_delay_ms,
        "cpu_count": psutil.cpu_count(),
        "local": baseline,
        "rounds": rounds,
    }
    (out / "serve_load.json").write_text(json.dumps(report, indent=1))
    lines = [
        "| clients | frames | frames/s | vs local | p50 ms | p99 ms | mean batch | batches formed | server CPU cores | server RSS MB | answered once, in order | identical / max rel. diff | decision flips |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| local Detector | {n_local} | {baseline['frames_per_s']} | 1.00 | {baseline['latency_ms']['p50']} | {baseline['latency_ms']['p99']} | 1 | - | - | - | - | - | - |",
    ]
    for r in rounds:
        lines.append(
            f"| {r['clients']} | {r['frames']}/{r['sent']} | {r['frames_per_s']} | {r['ratio_to_local']:.2f} | "
            f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | {r['mean_batch']} | "
            f"{' '.join(f'{b}:{n}' for b, n in r['batches_formed'].items())} | {r['server_cpu_cores']} | "
            f"{r['server_peak_rss_mb']:.0f} | {'yes' if r['answered_once_in_order'] else 'NO'} | "
            f"{r['scores_identical']}/{r['frames']}, {r['max_relative_score_difference']:.1e} | {r['decision_flips']} |"
        )
    (out / "serve_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
