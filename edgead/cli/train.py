"""edgead train, edgead methods: PyTorch training of any registered method."""

from __future__ import annotations

import json
import os
import re
import sys

import click


# ------------------------------------------------------------------------------------- train
@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML configuration file.")
@click.option(
    "--data",
    multiple=True,
    help="Dataset root (MVTec layout or good/ + defect folders); "
    "repeat it for a method that serves several products (diad).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder for checkpoints.")
@click.option(
    "--method",
    metavar="NAME",
    help="Method; 'edgead methods' lists them. Default: diffusionad where a CUDA GPU trains, d3ad on a CPU.",
)
@click.option("--preset", type=click.Choice(["tiny", "s", "m", "paper"]), help="Network size (default s).")
@click.option("--image-size", type=int, help="Training resolution, a multiple of 32 (default 256).")
@click.option("--steps", type=int, help="Optimiser steps (default 20000).")
@click.option("--batch-size", type=int, help="Batch size, half normal and half synthetic (default 16).")
@click.option(
    "--max-minutes",
    type=float,
    help="One time budget for the whole run: shared by its stages, which shorten to fit; the run ends "
    "complete and exportable inside it. With --resume: the budget for what is left.",
)
@click.option(
    "--fill-budget",
    is_flag=True,
    default=None,
    help="With --max-minutes: train each stage for its whole share of the budget, its steps planned "
    "from the rate measured in a short warm-up (more steps than the preset when there is time).",
)
@click.option("--textures", type=click.Path(file_okay=False), help="Folder of textures for synthetic anomalies.")
@click.option("--foreground/--no-foreground", default=None, help="Put synthetic anomalies on the object only.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Training device (default auto).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own configuration.")
@click.option(
    "--allow-changes",
    is_flag=True,
    help="With --resume (or --stage on a run): continue with other data or other training options; the "
    "run's history keeps what it was trained with before (method, network and size never change).",
)
@click.option(
    "--stage",
    default="all",
    show_default=True,
    metavar="NAME",
    help="Train one stage of a staged method (d3ad: autoencoder, denoiser, adapt, prior, patches; "
    "'edgead methods' lists each method's).",
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config field, e.g. train.learning_rate=2e-4."
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Training processes on this machine, one per GPU (or CPU processes): runs the same command under "
    "torchrun --nproc-per-node N with PyTorch DistributedDataParallel; --batch-size is the total "
    "over all.",
)
def train(
    config_path,
    data,
    out,
    method,
    preset,
    image_size,
    steps,
    batch_size,
    max_minutes,
    fill_budget,
    textures,
    foreground,
    device,
    resume,
    allow_changes,
    stage,
    sets,
    nproc,
) -> None:
    """Train a model on anomaly-free images and save a checkpoint in --out."""
    from ..core.errors import require

    require("torch", 'pip install "edgead[train]"', "Training")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the processes; each runs this command again
        sys.exit(_torchrun(nproc))
    from .. import api

    # a bar on a terminal, a progress line every few seconds in a log file
    def said(e) -> None:  # the plan, before a first step that can take minutes
        if e.task == "train" and os.environ.get("RANK", "0") == "0":
            click.echo(e.detail, err=True)

    result = api.train(
        list(data) or None,
        out,
        method=method,
        preset=preset,
        image_size=image_size,
        steps=steps,
        batch_size=batch_size,
        max_minutes=max_minutes,
        fill_budget=fill_budget,
        textures=textures,
        foreground=foreground,
        device=device,
        resume=resume,
        allow_changes=allow_changes,
        stage=stage,
        config=config_path,
        overrides=sets,
        progress=said,
    )
    if os.environ.get("RANK", "0") == "0":  # one summary, from training process 0
        click.echo(json.dumps({"run": str(out), **result.summary}, default=str))


_LAUNCHER_LOG = re.compile(r"^[WEI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/")
"""A log line of torchrun's own (the workers' lines are edgead's)."""


def _torchrun(nproc: int) -> int:
    """``edgead train ... --nproc N`` as ``torchrun --standalone --nproc-per-node N -m edgead.cli train ...``.

    The processes' output passes through as it comes; when one fails, torchrun stops the others and prints
    its own traceback and report, which are left out: the user gets one ``error:`` line, the failed
    process's own reason."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "edgead.cli",
        *args,
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace")
    reasons: list[str] = []
    report: list[str] = []
    try:
        for line in proc.stderr:
            if report or line.startswith(("Traceback (most recent call last):", "=" * 20)):
                report.append(line)
                continue
            if _LAUNCHER_LOG.match(line) or line.startswith(("*****", "Setting OMP_NUM_THREADS")):
                continue
            if line.startswith("error: "):
                if line not in reasons:
                    reasons.append(line)
                continue
            sys.stderr.write(line)
    except KeyboardInterrupt:
        proc.wait()
        raise
    code = proc.wait()
    if code != 0:
        click.echo(f"error: a training process failed: {_why(reasons, ''.join(report), code)}", err=True)
    return code


def _why(reasons: list[str], report: str, code: int) -> str:
    """The failed process's own error line, or what torchrun's report says of the first failure."""
    if reasons:
        return reasons[0][len("error: ") :].strip()
    root = report.split("Root Cause")[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", root)
    status = re.search(r"exitcode\s*:\s*(-?\d+)", root)
    if rank and status:
        n = int(status.group(1))
        how = f"was killed by signal {-n}" if n < 0 else f"exited with code {n}"
        return f"process {rank.group(1)} {how} (run without --nproc to see why)"
    return f"torchrun exited with code {code} (run without --nproc to see why)"


@click.command()
def methods() -> None:
    """List the registered methods."""
    from ..methods import all_methods

    for spec in all_methods():
        training = f"; training stages: {', '.join(spec.train_stages)}" if spec.train_stages else ""
        click.echo(f"{spec.name:<12} {spec.summary}  [stages: {', '.join(spec.stages)}{training}]")
