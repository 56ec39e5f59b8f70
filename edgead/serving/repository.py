"""A Triton model repository for a set of bundles: one model per bundle (and per product of a bundle that
serves several), each a ``config.pbtxt`` and a one-line ``model.py`` for Triton's Python backend.

``edgead serve`` writes one that points at the bundles where they lie; ``edgead export --triton-repo``
writes a self-contained one (the bundles copied in) for a stock ``tritonserver``, e.g. NGC's container
with ``pip install "edgead[gpu]"`` in it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.bundle import Bundle, load_bundle
from ..core.errors import BundleError, ConfigError
from ..core.outputs import check_new_dir, check_replaceable
from ..core.version import __version__
from .protocol import IMAGE, OUTPUTS

MODEL_PY = "from edgead.serving.triton_model import TritonPythonModel  # noqa: F401\n"
VERSION = "1"


@dataclass(frozen=True)
class ServedBundle:
    name: str
    """The Triton model name."""
    bundle: Path
    method: str
    bundle_id: str
    """The bundle's id (``Bundle.id``) the model must find when it loads."""
    product: str | None = None


@dataclass(frozen=True)
class Batching:
    max_batch: int = 8
    """Most frames one execution scores (frames of all requests batched together)."""
    queue_delay_us: int = 2000
    """How long Triton holds a request to batch it with later ones."""
    instances: int = 1
    """Copies of the model (each with its own sessions); on a CPU one copy already uses every core."""


def plan_models(bundles: list[str | Path], names: list[str] | None = None) -> list[ServedBundle]:
    """Check every bundle (verified, calibrated) and name its models; clashing names are an error."""
    if names and len(names) != len(bundles):
        raise ConfigError(f"{len(names)} --name given for {len(bundles)} bundles; give one per bundle or none")
    planned: list[ServedBundle] = []
    for i, path in enumerate(bundles):
        b = load_bundle(path)
        base = names[i] if names else _model_name(Path(path).resolve().name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", base):
            raise ConfigError(f"model name {base!r}: use letters, digits, '_', '.', '-'")
        check_servable(b)
        ident = b.id
        if b.manifest.products:
            planned += [ServedBundle(f"{base}-{p}", b.root.resolve(), b.method, ident, p) for p in b.manifest.products]
        else:
            planned.append(ServedBundle(base, b.root.resolve(), b.method, ident))
    seen: dict[str, Path] = {}
    for m in planned:
        if m.name in seen:
            raise ConfigError(
                f"two models would be named {m.name!r} ({seen[m.name]} and {m.bundle}); give each bundle a --name"
            )
        seen[m.name] = m.bundle
    return planned


def check_servable(bundle: Bundle) -> None:
    if not bundle.manifest.products and bundle.manifest.calibration is None:
        raise BundleError(f"bundle {bundle.root} is not calibrated; export or calibrate it before serving")


def _model_name(folder: str) -> str:
    stem = folder[: -len(".edgead")] if folder.endswith(".edgead") else folder
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"


def config_pbtxt(
    model: ServedBundle, batching: Batching, bundle_param: str, backend: str = "auto", threads: int | None = None
) -> str:
    outputs = ",\n".join(
        f'  {{ name: "{o.name}" data_type: TYPE_{"STRING" if o.triton_type == "BYTES" else o.triton_type} '
        f"dims: [ {', '.join(map(str, o.dims))} ] }}"
        for o in OUTPUTS
    )
    params = {
        "bundle": bundle_param,
        "bundle_id": model.bundle_id,
        "backend": backend,
        "product": model.product or "",
        "threads": "" if threads is None else str(threads),
        "edgead_method": model.method,
        "edgead_version": __version__,
    }
    parameters = ",\n".join(f'  {{ key: "{k}" value: {{ string_value: {_quote(v)} }} }}' for k, v in params.items())
    return (
        f'name: "{model.name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {batching.max_batch}\n"
        f'input [\n  {{ name: "{IMAGE}" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] allow_ragged_batch: true }}\n]\n'
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {batching.queue_delay_us} }}\n"
        f"instance_group [ {{ kind: KIND_CPU count: {batching.instances} }} ]\n"
        f"parameters [\n{parameters}\n]\n"
    )


def with_bundle_id(config: str, ident: str) -> str:
    """A model configuration (``config_pbtxt``) naming another bundle id: Triton reloads a model whose
    configuration changed, and the model refuses any bundle but this one."""
    new, n = re.subn(r'(key: "bundle_id" value: \{ string_value: )"[^"]*"', rf"\g<1>{_quote(ident)}", config)
    if n != 1:
        raise ConfigError("the model configuration has no bundle_id parameter (not written by edgead serve)")
    return new


def is_repository(path: Path) -> bool:
    """A folder edgead wrote: every entry a model whose configuration carries edgead's parameters."""
    entries = list(path.iterdir())
    return bool(entries) and all(
        (e / "config.pbtxt").is_file() and "edgead_method" in (e / "config.pbtxt").read_text() for e in entries
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_repository(
    out: str | Path,
    models: list[ServedBundle],
    batching: Batching = Batching(),
    backend: str = "auto",
    threads: int | None = None,
    copy_bundles: bool = True,
    overwrite: bool = False,
) -> Path:
    """``copy_bundles``: the repository holds the bundles (movable, for a stock tritonserver); otherwise its
    models point at the bundles' absolute paths."""
    if batching.max_batch < 1 or batching.instances < 1 or batching.queue_delay_us < 0:
        raise ConfigError(f"batching settings must be positive: {batching}")
    root = Path(out)
    check_new_dir(root, overwrite, "Triton model repository")
    check_replaceable(root, is_repository, "a Triton model repository")
    tmp = root.with_name(f".{root.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    copied: dict[Path, str] = {}
    try:
        for m in models:
            version = tmp / m.name / VERSION
            version.mkdir(parents=True)
            if not copy_bundles:
                param = str(m.bundle)
            elif m.bundle in copied:  # one bundle, several products: one copy
                param = f"../../{copied[m.bundle]}/{VERSION}/bundle"
            else:
                shutil.copytree(m.bundle, version / "bundle", ignore=shutil.ignore_patterns(".*.lock"))
                copied[m.bundle], param = m.name, "bundle"
            (version / "model.py").write_text(MODEL_PY)
            # A file where Python would cache model.py's bytecode: the import cannot write into the model's folder,
            # which Triton's POLL mode (edgead serve) would take for a changed model and load again.
            (version / "__pycache__").write_bytes(b"")
            (tmp / m.name / "config.pbtxt").write_text(config_pbtxt(m, batching, param, backend, threads))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
