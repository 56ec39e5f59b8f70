"""Measuring a bundle: edgead evaluate (quality), benchmark (speed, memory), validate (backend parity)."""

from __future__ import annotations

import json
import sys

import click

from ..core.progress import on_terminal
from .common import backend_option, int8_option


# ---------------------------------------------------------------------------------- evaluate
@click.command()
@click.argument("bundle", type=click.Path())
@click.option(
    "--data",
    required=True,
    multiple=True,
    help="Dataset with test images (MVTec test/ or labelled folders); repeat for several products.",
)
@click.option("--product", help="Product of a single --data (default: the dataset's folder name).")
@backend_option
@int8_option
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--sheet", type=click.Path(file_okay=False), help="Save a sheet of example images here.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Allow replacing an existing --out file or writing into a non-empty --sheet folder.",
)
def evaluate(bundle, data, product, backend, int8, out, sheet, overwrite) -> None:
    """Compute image and pixel AUROC/AP/F1max and AUPRO@0.3 on a test set (per product, and the mean)."""
    from .. import api
    from ..core.outputs import atomic_write, check_new_dir, check_new_file
    from ..evaluation.evaluate import format_table

    check_new_file(out, overwrite, "report")
    check_new_dir(sheet, overwrite, "sheet folder")
    report = api.evaluate(bundle, list(data), product=product, backend=backend, int8=int8, sheet=sheet).report
    if "products" not in report:
        click.echo(format_table(report))
    else:
        for name, r in report["products"].items():
            click.echo(f"== {name}\n" + format_table(r))
        click.echo("== mean over products\n" + format_table(report["mean"]))
    if out:
        atomic_write(out, json.dumps(report, indent=2), exclusive=not overwrite)
        click.echo(f"report written to {out}", err=True)


# --------------------------------------------------------------------------------- benchmark
@click.command()
@click.argument("bundle", type=click.Path())
@backend_option
@int8_option
@click.option(
    "--batch", type=click.IntRange(min=1), default=8, show_default=True, help="The larger batch measured besides 1."
)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per batch size.")
@click.option(
    "--checkpoint", type=click.Path(file_okay=False), help="Training run: also time PyTorch eager, alternating."
)
@click.option(
    "--images", type=click.Path(file_okay=False), help="Folder of images to time on (default: random frames)."
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
def benchmark(bundle, backend, int8, batch, runs, checkpoint, images, out, overwrite, product) -> None:
    """Latency per part (median, p90), throughput, peak memory; runtime vs PyTorch eager."""
    from ..core.outputs import atomic_write, check_new_file
    from ..evaluation.speed import benchmark as run_benchmark
    from ..evaluation.speed import format_report

    check_new_file(out, overwrite, "report")
    reference = None
    if checkpoint is not None:  # PyTorch eager stages of the run, timed against the runtime's
        from functools import partial

        from ..export.flow import torch_backends

        reference = partial(torch_backends, checkpoint)
    report = run_benchmark(
        bundle,
        backend,
        batch,
        runs,
        reference=reference,
        images=images,
        progress=on_terminal(),
        product=product,
        int8=int8,
    )
    click.echo(format_report(report))
    if out:
        atomic_write(out, json.dumps(report, indent=2), exclusive=not overwrite)


# ---------------------------------------------------------------------------------- validate
@click.command()
@click.argument("bundle", type=click.Path())
@backend_option
@int8_option
@click.option("--images", type=click.Path(file_okay=False), help="Real images (default: the bundle's sample images).")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="Tolerance set (default: from the engines)."
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file.")
@click.option("--product", help="Product whose thresholds decide (bundles that serve several products).")
def validate(bundle, backend, int8, images, precision, out, overwrite, product) -> None:
    """Compare a backend with ONNX Runtime CPU per stage and end to end; exit 1 outside tolerance."""
    from ..core.outputs import atomic_write, check_new_file
    from ..runtime.detector import Detector
    from ..runtime.validate import images_from, sample_images
    from ..runtime.validate import validate as run_validate

    check_new_file(out, overwrite, "report")
    with Detector.load(bundle, backend=backend, product=product, int8=int8) as det:
        imgs = images_from(images) if images else sample_images(det.bundle)
        if precision is None:  # the engines' precision (the set the backend prefers), or the INT8 graphs'
            built = {es.precision for es in det.manifest.engines} if det.backend_name == "tensorrt" else set()
            precision = "int8" if int8 else next((p for p in ("fp16", "int8") if p in built), "fp32")
        report = run_validate(det, imgs, precision=precision)
    click.echo(report.table())
    if out:
        atomic_write(out, json.dumps(report.to_dict(), indent=2), exclusive=not overwrite)
    if not report.passed:
        sys.exit(1)
