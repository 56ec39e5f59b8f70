"""edgead serve: bundles as models of NVIDIA Triton Inference Server, for a fleet of cameras."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import click

from .common import backend_option

batching_options = [
    click.option(
        "--max-batch",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Most frames one execution scores (Triton batches the frames of concurrent requests).",
    ),
    click.option(
        "--queue-delay-ms",
        type=click.FloatRange(min=0),
        default=2.0,
        show_default=True,
        help="How long Triton holds a request to batch it with the next ones.",
    ),
    click.option(
        "--instances",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Copies of each model (on a CPU one copy already uses every core).",
    ),
    click.option("--threads", type=click.IntRange(min=1), help="Threads of each CPU inference session."),
]


def with_batching(f):
    for option in reversed(batching_options):
        f = option(f)
    return f


def batching_from(max_batch: int, queue_delay_ms: float, instances: int):
    from ..serving.repository import Batching

    return Batching(max_batch=max_batch, queue_delay_us=round(queue_delay_ms * 1000), instances=instances)


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path())
@click.option("--name", "names", multiple=True, help="Model name per bundle, in order (default: the folder's name).")
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    help="Address to listen on; 127.0.0.1 keeps the server to this machine.",
)
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="Prometheus metrics (/metrics).")
@with_batching
@backend_option
@click.option(
    "--max-pixels",
    type=click.IntRange(min=64),
    default=16_000_000,
    show_default=True,
    help="Largest frame (width x height) the server accepts; larger ones get an error response.",
)
@click.option(
    "--reload-every",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between looks at the bundles: one replaced on disk is verified and swapped in (or "
    "refused, the old one serving on); 0: never.",
)
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False),
    help="A tritonserver binary to use (default: the one of the nvidia-pytriton package).",
)
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Write Triton's log here.")
def serve(
    bundles,
    names,
    host,
    http_port,
    grpc_port,
    metrics_port,
    max_batch,
    queue_delay_ms,
    instances,
    threads,
    backend,
    max_pixels,
    reload_every,
    tritonserver,
    log_file,
) -> None:
    """Serve bundles to many cameras from one machine with NVIDIA Triton Inference Server.

    Each bundle (each product of a multi-product bundle) is one model; frames from all clients are batched
    together. Clients: RemoteDetector("grpc://HOST:8001", model=NAME) or edgead run --server. Runs until
    Ctrl-C or SIGTERM. Health: /v2/health/live and /v2/health/ready on the HTTP port; Prometheus metrics
    (requests, batches, queue and compute times per model) on the metrics port. Triton's APIs that load or
    unload models (and shared memory, trace, logging) are closed to every client, whoever it runs as; bundles
    replaced on disk are verified and swapped in by serve itself (--reload-every).

    \b
    edgead serve tire.edgead grid.edgead --max-batch 16
    edgead run --server grpc://inference-box:8001 --model tire --camera 0
    """
    from ..data.io import MAX_PIXELS_ENV
    from ..serving.repository import plan_models, write_repository
    from ..serving.server import Endpoints, ServeError, TritonServer

    models = plan_models(list(bundles), list(names) or None)  # every bundle checked before Triton starts
    workdir = Path(tempfile.mkdtemp(prefix="edgead-serve-"))
    repo = write_repository(
        workdir / "models",
        models,
        batching_from(max_batch, queue_delay_ms, instances),
        backend=backend,
        threads=threads,
        copy_bundles=False,
    )
    endpoints = Endpoints(host, http_port, grpc_port, metrics_port)
    server = TritonServer(
        repo,
        endpoints,
        tritonserver=tritonserver,
        log_file=log_file,
        env={MAX_PIXELS_ENV: str(max_pixels)},
        poll_every_s=reload_every or None,
    )
    click.echo(f"starting Triton with {len(models)} model(s): {', '.join(m.name for m in models)}", err=True)
    watcher = None
    previous = signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    try:
        server.start()
        http = endpoints.url("http")
        click.echo(
            json.dumps(
                {
                    "models": {
                        m.name: {"bundle": str(m.bundle), "method": m.method, "product": m.product} for m in models
                    },
                    "grpc": endpoints.url("grpc"),
                    "http": http,
                    "health": {"live": f"{http}/v2/health/live", "ready": f"{http}/v2/health/ready"},
                    "metrics": f"{endpoints.url('metrics')}/metrics",
                }
            )
        )
        click.echo("serving; Ctrl-C stops", err=True)
        if reload_every > 0:
            from ..serving.watch import BundleWatcher

            watcher = BundleWatcher(
                models, repo, http, reload_every, echo=lambda m: click.echo(m, err=True), log_file=server.log_file
            ).start()
        code = server.wait()
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            raise ServeError(f"Triton stopped with exit code {code}; its log: {server.log_file}")
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
    finally:
        if watcher is not None:
            watcher.stop()
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
