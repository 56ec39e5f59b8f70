"""On the line: edgead run (camera, stream, video) and edgead predict (image files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..core.errors import ConfigError
from .common import backend_option, int8_option


# --------------------------------------------------------------------------------------- run
@click.command()
@click.argument("bundle", required=False, type=click.Path())
@click.option(
    "--bundle",
    "bundle_option",
    type=click.Path(),
    hidden=True,
    help="The bundle, as an option (edgead before 0.9); the same as the argument.",
)
@click.option(
    "--server",
    metavar="URL",
    help="Score on an inference server (edgead serve) instead: grpc://HOST:8001 or http://HOST:8000.",
)
@click.option("--model", help="The served model for --server (needed when the server serves several).")
@click.option("--camera", type=int, help="OpenCV camera index (0 is the first camera).")
@click.option(
    "--source", help="Video file, rtsp:// or http:// URL, GStreamer pipeline (with '!'), image folder or glob."
)
@backend_option
@int8_option
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Process every N-th frame.")
@click.option("--roi", help="Region of interest x,y,width,height (pixels of the source frame).")
@click.option(
    "--show",
    is_flag=True,
    help="Show an OpenCV window with overlay, verdict and FPS (q quits). Needs a display and the GUI "
    "OpenCV build (pip uninstall opencv-python-headless; pip install opencv-python); "
    "--web works with any install.",
)
@click.option(
    "--web",
    "web",
    metavar="[HOST:]PORT",
    help="Serve a line view to browsers: live frame, score over time, FPS, latency, counts, latest "
    "anomalies. PORT alone binds to 127.0.0.1; give a HOST (0.0.0.0) to expose it.",
)
@click.option(
    "--web-token",
    envvar="EDGEAD_WEB_TOKEN",
    help="Require ?token=TOKEN on every request of the line view (or $EDGEAD_WEB_TOKEN); needed to serve it "
    "beyond loopback.",
)
@click.option(
    "--web-public",
    is_flag=True,
    help="Serve the line view beyond loopback without a token: anyone who reaches this machine sees the line's frames.",
)
@click.option("--save", type=click.Path(dir_okay=False), help="Write an annotated video (.mp4, .avi, .mkv).")
@click.option("--save-fps", type=float, default=10.0, show_default=True, help="Frame rate of --save.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="One JSON line per processed frame.")
@click.option(
    "--save-anomalies",
    type=click.Path(file_okay=False),
    help="Save frame, overlay and mask of anomalous frames (once per event, its best frame, when the run decides "
    "over time: --smoothing, --events or --mqtt).",
)
@click.option(
    "--metrics",
    metavar="[HOST:]PORT",
    help="Serve Prometheus metrics at /metrics (frames, anomalies, events, parts, latency, reconnects, sinks' "
    "queues); PORT alone binds to 127.0.0.1.",
)
@click.option(
    "--mqtt",
    metavar="URL",
    help="Publish events and part decisions to an MQTT broker: mqtt://HOST[:PORT]/TOPIC/PREFIX[?qos=1&frames=1...] "
    "(mqtts:// for TLS; options in docs/line.md; a password comes from password_file=PATH or $EDGEAD_MQTT_PASSWORD).",
)
@click.option(
    "--smoothing",
    metavar="KEY=VALUE,...",
    help="Decide over time instead of frame by frame: ema=W (newest frame's weight in an exponential average), "
    "votes=K/N (K of the last N frames above), enter=L and leave=L (hysteresis, normalised levels: 0.5 is the "
    "threshold), part_frames=N (one decision per part of N frames). E.g. ema=0.5,votes=2/3,leave=0.45.",
)
@click.option(
    "--events",
    type=click.Path(dir_okay=False),
    help="One JSON line per anomaly event (first and last frame, peak score, best frame) and per part decision.",
)
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many processed frames.")
@click.option("--loop", is_flag=True, help="Restart a video file at its end.")
@click.option(
    "--reconnect-attempts",
    type=click.IntRange(min=0),
    help="Give up a dropped live source (or an unreachable --server) after N tries (default: never).",
)
@click.option("--status-every", type=float, default=5.0, show_default=True, help="Seconds between status lines.")
@click.option("--overwrite", is_flag=True, help="Allow replacing existing --save/--jsonl/--save-anomalies outputs.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
@click.option(
    "--pipeline",
    is_flag=True,
    help="Write the outputs (video, JSON lines, anomalies, line view) on a thread of their own, so that "
    "the next frame's inference overlaps them; no result is dropped.",
)
@click.option(
    "--sink",
    "sink_specs",
    multiple=True,
    metavar="NAME[=ARG]",
    help="Send results to any registered sink, e.g. --sink jsonl=events.jsonl (repeatable; built in: "
    "jsonl, video, anomalies, window, web, and plugins' sinks).",
)
@click.option(
    "--expect-bundle",
    metavar="ID|BUNDLE",
    help="Only accept verdicts of this bundle (its id, as every result carries it, or a copy of the bundle): "
    "with --server an answer from another bundle ends the run; with --bundle the bundle must be it.",
)
@click.option(
    "--max-unjudged",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="End with an error (exit 1) when more than this share of the frames got no verdict (refused by the "
    "model or the server, unreadable or lost); a run that judged no frame always does.",
)
def run(
    bundle,
    bundle_option,
    server,
    model,
    camera,
    source,
    backend,
    int8,
    stride,
    roi,
    show,
    web,
    web_token,
    web_public,
    save,
    save_fps,
    jsonl,
    save_anomalies,
    metrics,
    mqtt,
    smoothing,
    events,
    max_frames,
    loop,
    reconnect_attempts,
    status_every,
    overwrite,
    product,
    pipeline,
    sink_specs,
    expect_bundle,
    max_unjudged,
) -> None:
    """Run BUNDLE (or a served one, --server) on a live camera or stream (or a video/images) until stopped.

    \b
    edgead run tire.edgead --camera 0 --web 8080        # then open http://127.0.0.1:8080/
    edgead run tire.edgead --camera 0 --show
    edgead run tire.edgead --source line.mp4 --save out.mp4 --jsonl events.jsonl
    edgead run --server grpc://inference-box:8001 --model tire --camera 0 --jsonl events.jsonl
    """
    bundle = one_bundle(bundle, bundle_option)
    from ..line.sinks import SinkOptions
    from ..line.station import CameraSpec, failure, open_camera, sink_requests, summary
    from ..runtime.temporal import Smoothing

    named = [
        ("jsonl", jsonl),
        ("events", events),
        ("mqtt", mqtt),
        ("metrics", metrics),
        ("video", save),
        ("anomalies", save_anomalies),
        ("web", web),
        ("window", "" if show else None),
    ]  # the named options are short for --sink NAME=ARG
    spec = CameraSpec(
        bundle=bundle,
        server=server,
        model=model,
        camera=camera,
        source=source,
        backend=backend,
        int8=int8,
        product=product,
        stride=stride,
        roi=roi,
        smoothing=Smoothing.parse(smoothing),
        sinks=sink_requests(named, sink_specs),
        expect_bundle=expect_bundle,
        reconnect_attempts=reconnect_attempts,
        loop=loop,
        max_frames=max_frames,
        max_unjudged=max_unjudged,
        pipeline=pipeline,
    )
    spec.check()
    echo = lambda m: click.echo(m, err=True)
    options = SinkOptions(
        overwrite=overwrite,
        fps=save_fps,
        token=web_token,
        web_public=web_public,
        echo=echo,
        title=(Path(bundle).name if bundle else model or server) + (f" / {product}" if product else ""),
    )
    opened = open_camera(spec, options, echo, connect_served)
    det = opened.detector
    click.echo(f"running {det.method} on {opened.source.name} with {det.backend_name} ({det.choice.reason})", err=True)
    stats = opened.run(status_every, echo)
    click.echo(stats.status_line(), err=True)
    click.echo(json.dumps(summary(opened, stats)))
    why = failure(opened, stats)
    if why:
        click.echo(f"error: {why}", err=True)
        sys.exit(1)


# ------------------------------------------------------------------------------------------- station
@click.command()
@click.argument("station_file", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Check the station file and exit (nothing is opened).")
def station(station_file, check) -> None:
    """Run every camera of a station file (YAML) until SIGTERM or Ctrl-C; each camera has its bundle or served
    model, source, smoothing and sinks (docs/line.md has an example and a systemd unit).

    \b
    edgead station station.yaml --check     # errors name the key: station.yaml: cameras[1].smoothing: ...
    edgead station station.yaml

    JSON lines are appended to, the anomalies of each start go to a folder of their own: a restart keeps
    everything of the runs before. Prints one JSON line per camera at the end; exits 1 when any camera failed.
    """
    import os

    from ..line.station import load_station, run_station, summary

    specs, status_every = load_station(station_file)
    if check:
        click.echo(f"{station_file}: {len(specs)} cameras: {', '.join(s.name for s in specs)}", err=True)
        return
    token = os.environ.get("EDGEAD_WEB_TOKEN")
    outcomes = run_station(
        specs, status_every, lambda m: click.echo(m, err=True), web_token=token, connect=connect_served
    )
    failed = []
    for camera, stats, why in outcomes:
        if stats is not None:
            click.echo(json.dumps(summary(camera, stats)))
        if why:
            failed.append(f"camera {camera.spec.name}: {why}")
    for line in failed:
        click.echo(f"error: {line}", err=True)
    if failed:
        sys.exit(1)


# ----------------------------------------------------------------------------------- predict
@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="BUNDLE IMAGES...")
@click.option(
    "--bundle",
    "bundle_option",
    type=click.Path(),
    hidden=True,
    help="The bundle, as an option (edgead before 0.9): then every argument is an image.",
)
@backend_option
@int8_option
@click.option("--out", type=click.Path(file_okay=False), help="Save an overlay per image here.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="Write one JSON line per image.")
@click.option("--overwrite", is_flag=True, help="Allow replacing an existing --jsonl file or non-empty --out folder.")
@click.option("--product", help="Product whose thresholds apply (bundles that serve several products).")
def predict(paths, bundle_option, backend, int8, out, jsonl, overwrite, product) -> None:
    """Score image files (paths, folders or globs) with BUNDLE and print a verdict per image.

    Prints: path, raw score, normalised score (threshold at 0.5), verdict. An unreadable image,
    a missing path or a pattern that matches nothing is reported and skipped; the exit code is 1
    when any of them could not be scored.
    """
    from ..core.errors import InputError, SourceError
    from ..core.outputs import atomic_write, check_new_dir, check_new_file
    from ..runtime.detector import Detector
    from ..runtime.sources import expand_images, unique_files

    bundle, images = (bundle_option, paths) if bundle_option else (paths[0], paths[1:])
    if not images:
        raise ConfigError("give the images to score after the bundle: edgead predict BUNDLE IMAGES...")
    files, failed, missing = [], [], []
    for spec in images:
        try:
            files.extend(expand_images([spec]))
        except SourceError as exc:
            failed.append(spec)
            missing.append(str(exc))
    files = unique_files(files)
    if not files:  # nothing at all to score: one error line
        raise SourceError("; ".join(missing))
    for message in missing:
        click.echo(f"error: {message}", err=True)
    check_new_dir(out, overwrite, "overlay folder")
    check_new_file(jsonl, overwrite, "JSON-lines file")
    names = _overlay_names(files)
    lines, n_bad = [], 0
    with Detector.load(bundle, backend=backend, product=product, int8=int8) as det:
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
                from ..data.io import write_image

                write_image(Path(out) / names[f], r.overlay(color="rgb"))
    if jsonl:
        atomic_write(jsonl, "".join(lines), exclusive=not overwrite)
    click.echo(
        f"{len(lines)} images scored, {n_bad} anomalous" + (f", {len(failed)} could not be read" if failed else ""),
        err=True,
    )
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


def connect_served(spec, echo):
    """A camera's served model (``server``, ``model``): the fleet's client, which the line application leaves to
    the commands."""
    from ..serving.client import RemoteDetector

    return RemoteDetector(
        spec.server,
        model=spec.model,
        reconnect_attempts=spec.reconnect_attempts,
        on_event=echo,
        expect_bundle=spec.expect_bundle,
    )


def one_bundle(argument: str | None, option: str | None) -> str | None:
    """The bundle given as the argument or (edgead before 0.9) as --bundle; both is an error."""
    if argument and option:
        raise ConfigError("give the bundle once: as the argument (edgead run BUNDLE ...), not also as --bundle")
    return argument or option
