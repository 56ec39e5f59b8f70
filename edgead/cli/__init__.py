"""The ``edgead`` command: one module per group of commands, each a click command added here.

    train.py     train, methods              export.py    export
    line.py      run, station, predict       measure.py   evaluate, benchmark, validate
    bundles.py   calibrate, keygen, sign, verify          demo.py      demo
    serve.py     serve (Triton Inference Server)

Every expected failure (EdgeadError) ends as one ``error: ...`` line and a non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from ..core.version import __version__
from . import bundles, demo, export, line, measure, serve, train
from .common import EdgeadGroup

log = logging.getLogger("edgead")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a command run in-process by a test or an application
    has its own), not to the stream that was current when logging was set up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _stderr_handler() -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


@click.group(cls=EdgeadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgead")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Diffusion-based visual anomaly detection for edge devices.

    train (PyTorch) -> export (ONNX, TensorRT) -> run (camera, video, images; no PyTorch).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, handlers=[_stderr_handler()])  # does nothing where logging is set up
    writes = [h for lg in (logging.getLogger(), log) for h in lg.handlers if isinstance(h, _StderrHandler)]
    if not writes:  # an application's (or pytest's) logging: edgead's messages still reach this command's stderr
        log.addHandler(_stderr_handler())
    log.setLevel(level)
    if verbose == 0:  # OpenCV's own warnings (V4L2, FFmpeg) would bury edgead's one-line errors
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


for _command in (
    train.train,
    train.methods,
    export.export,
    line.run,
    line.station,
    line.predict,
    measure.evaluate,
    measure.benchmark,
    measure.validate,
    bundles.calibrate,
    bundles.keygen,
    bundles.sign,
    bundles.verify,
    serve.serve,
    demo.demo,
):
    main.add_command(_command)
