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

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .registry import Registry, load_target

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
    """A ``edgead.runtime.pipeline.Pipeline`` subclass (numpy, no PyTorch)."""
    tiny: tuple[str, ...] = ()
    """Configuration overrides that train in seconds on a CPU (tests, demo)."""
    multi_product: bool = False
    """One model for several products (several --data); calibration is kept per product."""
    train_stages: tuple[str, ...] = ()
    """Training stages that can be run alone (``edgead train --stage NAME``), in order."""
    budget: tuple[tuple[str, float], ...] = ()
    """Loop stages and their shares of a run's time budget (``--max-minutes``), in training order."""
    budget_reserve: float = 0.0
    """Share of the budget kept for the stages without an optimisation loop."""
    budget_fixed: tuple[str, ...] = ()
    """Loop stages whose length is part of the method, not of the budget (D3AD's one adaptation epoch): a filled
    budget (``--fill-budget``) never lengthens them, it only shortens them to their share."""
    half_resolution_decoder: tuple[str, ...] = ()
    """Latent methods: presets whose autoencoder decodes at half resolution unless
    ``model.autoencoder_decoder_stride`` says otherwise (training/latent/encoders.py:HalfResolutionDecoder)."""

    def load(self, part: Part) -> Any:
        return load_target(getattr(self, part))


METHODS: Registry[MethodSpec] = Registry(
    "method",
    {
        "diffusionad": "edgead.methods.diffusionad:SPEC",
        "patchcore": "edgead.methods.patchcore:SPEC",
        "d3ad": "edgead.methods.d3ad:SPEC",
        "diad": "edgead.methods.diad:SPEC",
    },
    MethodSpec,
)


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method at run time (a name that is taken is an error)."""
    return METHODS.register(spec.name, spec)


unregister = METHODS.unregister
method_names = METHODS.names
get_method = METHODS.get
all_methods = METHODS.all


def params_from(section: Any, params: type, **fitted: Any) -> Any:
    """A method's manifest parameters from its configuration section: every field the two share is copied
    (one definition, in the config), the others come from ``fitted`` (values export measures or chooses)."""
    shared = {f.name for f in dataclasses.fields(params)} & {f.name for f in dataclasses.fields(section)}
    return params(**{name: getattr(section, name) for name in shared - set(fitted)}, **fitted)
