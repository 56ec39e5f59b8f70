"""edgead export: a training run to a bundle (ONNX, calibration, parity), or TensorRT engines."""

from __future__ import annotations

import json

import click

from ..core.errors import ConfigError
from .common import backend_option, progress, resigned
from .serve import batching_from, with_batching


# ------------------------------------------------------------------------------------ export
@click.command()
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), help="Bundle folder to create (when SOURCE is a training run).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--data", multiple=True, help="Dataset(s) for calibration/parity if they moved since training.")
@click.option("--parity-images", default="32", show_default=True,
              help="Validation+test images compared with PyTorch, or 'all'.")
@click.option("--engine", type=click.Choice(["fp16", "fp32", "int8"]),
              help="Build TensorRT engines into the bundle SOURCE (int8: the stages of its INT8 set, from QDQ graphs "
                   "calibrated on --calibration; the others fp32).")
@click.option("--workspace", type=float, default=2.0, show_default=True, help="TensorRT workspace (GB).")
@click.option("--batch", type=int, default=1, show_default=True, help="Largest batch the engines accept.")
@click.option("--trt", "flavour", type=click.Choice(["auto", "tensorrt", "rtx"]), default="auto", show_default=True,
              help="TensorRT flavour: tensorrt (10/11: Jetson, data-centre GPUs) or rtx (TensorRT for RTX: "
                   "desktop RTX GPUs; builds without a GPU). auto: whichever is installed, TensorRT first.")
@click.option("--sm", metavar="LIST", help="TensorRT-RTX target compute capabilities, e.g. 86,89,120 "
              "(default: this GPU, or without one the portable set).")
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Sign the bundle with this private key.")
@click.option("--quantize", type=click.Choice(["int8"]),
              help="Add INT8 graphs to the bundle SOURCE (ONNX Runtime static quantisation, QDQ, per-channel), "
                   "calibrated on --calibration; stages whose scores move stay fp32.")
@click.option("--calibration", "calibration_images", type=click.Path(),
              help="Good images for --quantize and --engine int8 (a folder or glob; e.g. the training set's good "
                   "images).")
@click.option("--int8-tolerance", type=float, default=0.1, show_default=True,
              help="Largest score change a stage may cause in INT8, as a share of the margin between the good "
                   "images' mean score and the threshold.")
@click.option("--triton-repo", type=click.Path(file_okay=False),
              help="Write a Triton model repository holding the bundle SOURCE (and any --also bundles), for "
                   "a stock tritonserver (e.g. NGC's container with edgead installed).")
@click.option("--also", "also", multiple=True, type=click.Path(), help="More bundles for --triton-repo.")
@with_batching
@backend_option
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Inference settings of the method or calibration, e.g. d3ad.dynamic=false, calibration.target_frr=0.005.")
def export(source, out, overwrite, data, parity_images, engine, workspace, batch, flavour, sm, sign_key,
           quantize, calibration_images, int8_tolerance, triton_repo, also, max_batch, queue_delay_ms, instances,
           threads, backend, sets) -> None:
    """Export a training run to a bundle, or build TensorRT engines for a bundle.

    \b
    edgead export runs/tire --out tire.edgead          ONNX graphs, calibration, parity check
    edgead export tire.edgead --engine fp16            TensorRT engines for this GPU
    edgead export tire.edgead --triton-repo models     a model repository for tritonserver
    edgead export tire.edgead --quantize int8 --calibration data/tire/train/good
    """
    if quantize is not None:
        if calibration_images is None:
            raise ConfigError("--quantize int8 needs --calibration GOOD_IMAGES (a folder of anomaly-free images)")
        from ..core.errors import require

        require("onnx", 'pip install "edgead[train]"', "INT8 quantisation")
        from ..export.quantize import quantize_bundle

        report = quantize_bundle(source, calibration_images, tolerance=int8_tolerance, overwrite=overwrite,
                                 sign_key=sign_key)
        resigned(report.pop("signature_dropped", False), source)
        for name, st in report["stages"].items():
            click.echo(f"{name:<18} " + (f"fp32 ({st['kept_fp32']})" if "kept_fp32" in st else
                                         f"int8 (score change {st['score_change']:.3f}, map change "
                                         f"{st['map_change']:.3f} of the margin)"), err=True)
        click.echo(json.dumps(report))
        return
    if triton_repo is not None:
        from ..serving.repository import plan_models, write_repository

        models = plan_models([source, *also])
        repo = write_repository(triton_repo, models, batching_from(max_batch, queue_delay_ms, instances),
                                backend=backend, threads=threads, copy_bundles=True, overwrite=overwrite)
        click.echo(json.dumps({"triton_repository": str(repo), "models": [m.name for m in models],
                               "run": f"tritonserver --model-repository={repo.resolve()}"}))
        return
    if engine is not None:
        from ..export.tensorrt import build_engines

        engine_set, report = build_engines(source, engine, workspace_gb=workspace, max_batch=batch,
                                           overwrite=overwrite, sign_key=sign_key, flavour=flavour, sm=sm,
                                           calibration=calibration_images)
        resigned(report.pop("signature_dropped", False), source)
        for name, st in report["stages"].items():
            click.echo(f"{name:<18} {st['obtained_precision']:<28} built in {st['build_seconds']:.1f} s, "
                       f"{st['megabytes']:.1f} MB", err=True)
        click.echo(json.dumps({"engines": engine_set.directory, **report}, default=str))
        return
    if out is None:
        raise ConfigError("export of a training run needs --out BUNDLE")
    from ..core.errors import require

    require("torch", 'pip install "edgead[train]"', "Exporting")
    n = None if parity_images == "all" else _int(parity_images, "--parity-images")
    from ..export.flow import export_run

    bundle, parity = export_run(source, out, overwrite=overwrite, data=list(data) or None, parity_images=n,
                                progress=progress(), overrides=list(sets))
    if sign_key:
        from ..core.signing import sign as sign_bundle

        sign_bundle(bundle.root, sign_key)
    m = bundle.manifest
    thresholds = ({name: c.image.threshold for name, c in m.products.items()} if m.products
                  else m.calibration.image.threshold if m.calibration else None)
    click.echo(json.dumps({
        "bundle": str(bundle.root),
        "stages": [s.name for s in m.stages],
        "image_threshold": thresholds,
        **({"fusion": m.provenance["export"]["fusion"]} if "fusion" in m.provenance.get("export", {}) else {}),
        "parity": parity,
    }, default=str))


def _int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer or 'all', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"{name} must be >= 1, got {n}")
    return n
