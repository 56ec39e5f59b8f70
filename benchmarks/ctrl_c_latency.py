"""Ctrl-C inside a long training step, as a user at a terminal meets it: plain ``edgead train`` of DiffusionAD ``s``
at 256 px on the CPU (a step takes about a minute), interrupted inside its first step, then once more.

    python benchmarks/ctrl_c_latency.py ../shared/data/hazelnut_toy /tmp/ctrl-c-run \\
        --out benchmarks/results/budget_load/ctrl_c_diffusionad_s_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

ACK = "stopping once the step"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("run", type=Path)
    p.add_argument("--after", type=float, default=45.0, help="seconds after the start of the first interrupt")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    shutil.rmtree(a.run, ignore_errors=True)
    train = ["edgead", "train", "--method", "diffusionad", "--preset", "s", "--device", "cpu"]
    child = subprocess.Popen(
        [*train, "--data", str(a.data), "--out", str(a.run)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as at a terminal: a job started in the background of a script begins with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in child.stderr:
            lines.append((time.monotonic(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    t0 = time.monotonic()
    time.sleep(a.after)
    t1 = time.monotonic()
    os.killpg(child.pid, signal.SIGINT)
    while not any(ACK in line for _, line in lines) and time.monotonic() - t1 < 300:
        time.sleep(0.05)
    ack = next((t for t, line in lines if ACK in line), None)
    log = a.run / "train_log.jsonl"
    steps_done = len(log.read_text().splitlines()) if log.is_file() else 0
    t2 = time.monotonic()
    os.killpg(child.pid, signal.SIGINT)
    code = child.wait(300)
    t3 = time.monotonic()
    report = {
        "command": " ".join([*train, "--data", str(a.data), "--out", str(a.run)]),
        "first_interrupt_after_s": round(t1 - t0, 1),
        "steps_logged_at_first_interrupt": steps_done,
        "acknowledged_after_s": None if ack is None else round(ack - t1, 2),
        "second_interrupt_to_exit_s": round(t3 - t2, 2),
        "exit": code,
        "stderr": [line for _, line in lines][-6:],
    }
    print(json.dumps(report, indent=2))
    if a.out:
        a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
