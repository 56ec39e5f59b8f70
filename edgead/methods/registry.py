"""The one table of methods (anomalib's ``get_model``, diffusers' lazy import structure).

Every layer asks this table, never compares method names: the CLI's choices, configuration
sections, the training dispatch, the export flow, the manifest's method parameters, the
runtime pipeline and the tests parametrised over methods. A table entry names where each
layer's implementation lives as ``"module:attribute"``; nothing is imported until it is used, so
the runtime (no torch) never imports training or export code.

Methods come from three places: the built-in table below, ``register()`` (tests, notebooks)
and the ``edgead.methods`` entry-point group (third-party packages).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

Part = Literal["trainer", "exporter", "pipeline"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    config: type
    """Dataclass of the method's configuration section (``config.<name>``), torch-free."""
    params: type
    """Dataclass of the method's parameters in the bundle manifest (``manifest.params``), torch-free."""
    stages: tuple[str, ...]
    """Exported stage names, in pipeline order; a bundle of this method has exactly these."""
    extras: tuple[str, ...]
    """Arrays the runtime needs from the bundle (checked at load)."""
    trainer: str
    """``train(config, run_dir, resume=False, progress=True) -> dict`` (PyTorch)."""
    exporter: str
    """A ``edgead.export.flow.MethodExport`` subclass (PyTorch)."""
    pipeline: str
    """A ``edgead.runtime.pipelines.base.Pipeline`` subclass (numpy, no PyTorch)."""
    tiny: tuple[str, ...] = ()
    """Configuration overrides that train in seconds on a CPU (tests, demo)."""
    multi_product: bool = False
    """One model for several products (several --data); calibration is kept per product."""
    train_stages: tuple[str, ...] = ()
    """Training stages that can be run alone (``edgead train --stage NAME``), in order."""

    def load(self, part: Part) -> Any:
        target = getattr(self, part)
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


BUILTIN: dict[str, str] = {
    "diffusionad": "edgead.methods.diffusionad:SPEC",
    "patchcore": "edgead.methods.patchcore:SPEC",
    "d3ad": "edgead.methods.d3ad:SPEC",
    "diad": "edgead.methods.diad:SPEC",
}
_registered: dict[str, MethodSpec] = {}
_loaded: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method at run time (a name that is taken is an error)."""
    if spec.name in method_names() and get_method(spec.name) is not spec:
        raise ConfigError(f"a method named {spec.name!r} is already registered")
    _registered[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="edgead.methods")}


def method_names() -> list[str]:
    return sorted({*BUILTIN, *_registered, *_entry_points()})


def get_method(name: str) -> MethodSpec:
    if name in _registered:
        return _registered[name]
    if name not in _loaded:
        where = BUILTIN.get(name) or _entry_points().get(name)
        if where is None:
            raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}")
        module, _, attr = where.partition(":")
        spec = getattr(importlib.import_module(module), attr)
        if not isinstance(spec, MethodSpec) or spec.name != name:
            raise ConfigError(f"{where} is not the MethodSpec of {name!r}")
        _loaded[name] = spec
    return _loaded[name]


def all_methods() -> list[MethodSpec]:
    return [get_method(n) for n in method_names()]
