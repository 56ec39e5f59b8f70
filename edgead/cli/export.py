"""edgead export: one command, four declared modes (ultralytics' export table): a training run to a bundle, or a
bundle to TensorRT engines, to INT8 graphs, or into a Triton model repository. An option of another mode is an
error naming the mode, never silently ignored."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click
from click.core import ParameterSource

from ..core.errors import ConfigError
from .common import backend_option, resigned
from .serve import with_batching


@dataclass(frozen=True)
class ExportMode:
    name: str
    selector: str | None
    """The option that chooses the mode (None: the default one)."""
    source: str
    """What SOURCE is in this mode."""
    writes: str
    options: frozenset[str]
    """The options that apply besides the selector (parameter names)."""


EXPORT_MODES = (
    ExportMode(
        "bundle",
        None,
        "a training run",
        "a new bundle (--out): ONNX graphs, calibration, parity check",
        frozenset({"out", "overwrite", "data", "parity_images", "sign_key", "sets"}),
    ),
    ExportMode(
        "engine",
        "engine",
        "a bundle",
        "TensorRT engines into the bundle",
        frozenset({"workspace", "batch", "flavour", "sm", "calibration_images", "overwrite", "sign_key"}),
    ),
    ExportMode(
        "int8",
        "quantize",
        "a bundle",
        "INT8 graphs into the bundle",
        frozenset({"calibration_images", "int8_tolerance", "overwrite", "sign_key"}),
    ),
    ExportMode(
        "triton",
        "triton_repo",
        "bundles",
        "a Triton model repository (a new folder)",
        frozenset({"also", "max_batch", "queue_delay_ms", "instances", "threads", "backend", "overwrite"}),
    ),
)
"""Every mode of ``edgead export`` with its options; tests/test_cli.py checks each refuses the others'."""


def _flag(ctx: click.Context, name: str) -> str:
    param = next(p for p in ctx.command.params if p.name == name)
    return max(param.opts, key=len)


def choose_mode(ctx: click.Context) -> ExportMode:
    """The mode the given options select; ConfigError for two selectors or an option of another mode."""
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    selected = [m for m in EXPORT_MODES if m.selector in given]
    if len(selected) > 1:
        raise ConfigError(f"choose one export mode: {' or '.join(_flag(ctx, m.selector) for m in selected)}")
    mode = selected[0] if selected else EXPORT_MODES[0]
    foreign = sorted(given - mode.options - {mode.selector, "source"})
    if foreign:
        flags = ", ".join(_flag(ctx, name) for name in foreign)
        how = "" if mode.selector is None else f" {_flag(ctx, mode.selector)}"
        raise ConfigError(
            f"{flags} do{'es' if len(foreign) == 1 else ''} not apply to 'edgead export{how}' (it "
            f"writes {mode.writes}); see 'edgead export --help' for each mode's options"
        )
    return mode


@click.command()
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), help="[bundle] Bundle folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace what the mode writes if it exists.")
@click.option("--data", multiple=True, help="[bundle] Dataset(s) for calibration/parity if they moved since training.")
@click.option(
    "--parity-images",
    default="32",
    show_default=True,
    help="[bundle] Validation+test images compared with PyTorch, or 'all'.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="[bundle] Inference settings of the method or calibration, e.g. d3ad.dynamic=false.",
)
@click.option(
    "--engine",
    type=click.Choice(["fp16", "fp32", "int8"]),
    help="[engine] Build TensorRT engines into the bundle SOURCE (int8: the stages of its INT8 set, from "
    "QDQ graphs calibrated on --calibration; the others fp32).",
)
@click.option("--workspace", type=float, default=2.0, show_default=True, help="[engine] TensorRT workspace (GB).")
@click.option("--batch", type=int, default=1, show_default=True, help="[engine] Largest batch the engines accept.")
@click.option(
    "--trt",
    "flavour",
    type=click.Choice(["auto", "tensorrt", "rtx"]),
    default="auto",
    show_default=True,
    help="[engine] TensorRT flavour: tensorrt (10/11: Jetson, data-centre GPUs) or rtx (TensorRT for RTX: "
    "desktop RTX GPUs; builds without a GPU). auto: whichever is installed, TensorRT first.",
)
@click.option(
    "--sm",
    metavar="LIST",
    help="[engine] TensorRT-RTX target compute capabilities, e.g. 86,89,120 "
    "(default: this GPU, or without one the portable set).",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="[int8] Add INT8 graphs to the bundle SOURCE (ONNX Runtime static quantisation, QDQ, "
    "per-channel), calibrated on --calibration; stages whose scores move stay fp32.",
)
@click.option(
    "--calibration",
    "calibration_images",
    type=click.Path(),
    help="[engine int8, int8] Good images (a folder or glob; e.g. the training set's good images).",
)
@click.option(
    "--int8-tolerance",
    type=float,
    default=0.1,
    show_default=True,
    help="[int8] Largest score change a stage may cause in INT8, as a share of the margin between the good "
    "images' mean score and the threshold.",
)
@click.option(
    "--triton-repo",
    type=click.Path(file_okay=False),
    help="[triton] Write a Triton model repository holding the bundle SOURCE (and any --also bundles), "
    "for a stock tritonserver (e.g. NGC's container with edgead installed).",
)
@click.option("--also", "also", multiple=True, type=click.Path(), help="[triton] More bundles.")
@with_batching
@backend_option
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Sign the changed or new bundle with this key.")
@click.pass_context
def export(
    ctx,
    source,
    out,
    overwrite,
    data,
    parity_images,
    sets,
    engine,
    workspace,
    batch,
    flavour,
    sm,
    quantize,
    calibration_images,
    int8_tolerance,
    triton_repo,
    also,
    max_batch,
    queue_delay_ms,
    instances,
    threads,
    backend,
    sign_key,
) -> None:
    """Export a training run to a bundle; or a bundle to TensorRT engines, INT8 graphs or a Triton repository.

    Four modes, chosen by one option; an option of another mode is an error:

    \b
    mode     chosen by       SOURCE          writes
    bundle   (default)       training run    a new bundle: --out, --data, --parity-images, --set
    engine   --engine P      bundle          TensorRT engines into it: --trt, --sm, --workspace, --batch, --calibration
    int8     --quantize int8 bundle          INT8 graphs into it: --calibration, --int8-tolerance
    triton   --triton-repo D bundle(s)       a Triton model repository: --also, --max-batch, --queue-delay-ms, ...

    \b
    edgead export runs/tire --out tire.edgead
    edgead export tire.edgead --engine fp16
    edgead export tire.edgead --quantize int8 --calibration data/tire/train/good
    edgead export tire.edgead --triton-repo models
    """
    from .. import api

    mode = choose_mode(ctx)
    if mode.name == "int8":
        if calibration_images is None:
            raise ConfigError("--quantize int8 needs --calibration GOOD_IMAGES (a folder of anomaly-free images)")
        q = api.quantize(source, calibration_images, tolerance=int8_tolerance, overwrite=overwrite, sign_key=sign_key)
        resigned(q.signature_dropped, source)
        for name, st in q.report["stages"].items():
            click.echo(
                f"{name:<18} "
                + (
                    f"fp32 ({st['kept_fp32']})"
                    if "kept_fp32" in st
                    else f"int8 (score change {st['score_change']:.3f}, map change "
                    f"{st['map_change']:.3f} of the margin)"
                ),
                err=True,
            )
        click.echo(json.dumps(q.report))
    elif mode.name == "triton":
        repo = api.triton_repository(
            [source, *also],
            triton_repo,
            max_batch=max_batch,
            queue_delay_ms=queue_delay_ms,
            instances=instances,
            backend=backend,
            threads=threads,
            overwrite=overwrite,
        )
        click.echo(
            json.dumps(
                {
                    "triton_repository": str(repo.repository),
                    "models": repo.models,
                    "run": f"tritonserver --model-repository={repo.repository.resolve()}",
                }
            )
        )
    elif mode.name == "engine":
        e = api.build_engines(
            source,
            engine,
            flavour=flavour,
            sm=sm,
            workspace_gb=workspace,
            max_batch=batch,
            calibration=calibration_images,
            overwrite=overwrite,
            sign_key=sign_key,
        )
        resigned(e.signature_dropped, source)
        for name, st in e.report["stages"].items():
            click.echo(
                f"{name:<18} {st['obtained_precision']:<28} built in {st['build_seconds']:.1f} s, "
                f"{st['megabytes']:.1f} MB",
                err=True,
            )
        click.echo(json.dumps({"engines": e.directory, **e.report}, default=str))
    else:
        if out is None:
            raise ConfigError("export of a training run needs --out BUNDLE")
        n = None if parity_images == "all" else _int(parity_images, "--parity-images")

        def said(e) -> None:  # the export's steps as lines: a latent method's export takes minutes
            if e.task == "export":
                click.echo(f"export [{e.done}/{e.total}] {e.detail}", err=True)

        r = api.export(
            source,
            out,
            overwrite=overwrite,
            data=list(data) or None,
            parity_images=n,
            sign_key=sign_key,
            overrides=list(sets),
            progress=said,
        )
        click.echo(
            json.dumps(
                {
                    "bundle": str(r.bundle),
                    "stages": r.stages,
                    "image_threshold": r.image_threshold,
                    **({"fusion": r.fusion} if r.fusion else {}),
                    "parity": r.parity,
                },
                default=str,
            )
        )


def _int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer or 'all', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"{name} must be >= 1, got {n}")
    return n
