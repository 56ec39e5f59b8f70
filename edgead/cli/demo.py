"""edgead demo: the whole path on a generated data set, on this CPU."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.progress import on_terminal


# -------------------------------------------------------------------------------------- demo
@click.command()
@click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", default=600, show_default=True, type=int, help="Training steps of the tiny model.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo in --out.")
def demo(out, steps, overwrite) -> None:
    """Generate a small product data set, train, export, detect and evaluate, all on this CPU."""
    from ..demo import run_demo

    run_demo(Path(out), steps=steps, overwrite=overwrite, progress=on_terminal(), echo=click.echo)
