"""The model bundle on disk: manifest + ONNX graphs + TensorRT engines + extras.

    name.edgead/
      manifest.yaml     schema version, method, pre-processing, method constants, calibration,
                        stages (I/O contracts, sha256), extras, engines, provenance
      graphs/*.onnx
      engines/<gpu>-trt<version>-<precision>/*.plan
      extras/*.npy      fixed noise (DiffusionAD), memory bank (PatchCore), ...

Loading is strict: an unknown key, another schema version, a missing file, a path outside the
bundle or a sha256 mismatch is a BundleError naming the file. The manifest itself is covered: its
last line is the sha256 of everything above it, so an edited threshold is refused, and a bundle
may carry an Ed25519 signature of the manifest (``edgead.core.signing``). This module imports no ML
framework.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .codec import check_finite, from_dict, read_yaml_text, to_dict, to_yaml
from .contracts import StageContract
from .errors import BundleError, ConfigError
from .manifest import ExtraEntry, Manifest, StageEntry
from .methods import get_method
from .outputs import atomic_write, check_replaceable, check_writable, exclusive, new_temp_dir, publish_dir
from .scoring import SCORE_RULES
from .signing import SIGNATURE, sign, trusted_keys_from_env
from .signing import verify as verify_signature
from .version import __version__

SCHEMA_VERSION = 2
MANIFEST = "manifest.yaml"
RUNTIME_CACHE_SUFFIX = ".runtime-cache"
"""Kernels TensorRT for RTX compiled on this GPU, kept beside its engines: the one file a bundle may
hold that its manifest does not list (a cache, rebuilt when it does not fit)."""
INTEGRITY = "# sha256 of the lines above: "


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_id(manifest: Path) -> str:
    """A bundle's id: the first 16 hex digits of its manifest's sha256. The manifest lists every other file's
    sha256, so its hash names the whole bundle (thresholds included)."""
    return sha256_file(manifest)[:16]


def bundle_pin(spec: str | Path) -> str:
    """The bundle id a client pins (``--expect-bundle``): a 16-hex id, or the id of the bundle folder named."""
    text = str(spec).strip()
    if Path(text).is_dir():
        if not (Path(text) / MANIFEST).is_file():
            raise ConfigError(f"--expect-bundle {text}: the folder is not a bundle ({MANIFEST} is missing)")
        return manifest_id(Path(text) / MANIFEST)
    if len(text) == 16 and all(c in "0123456789abcdef" for c in text.lower()):
        return text.lower()
    raise ConfigError(
        f"--expect-bundle {text!r}: give a bundle id (16 hex digits, as results carry it) or a bundle folder"
    )


@dataclass
class Bundle:
    root: Path
    manifest: Manifest
    manifest_sha256: str = ""
    """sha256 of the manifest's bytes as loaded or last saved ("": read from disk when asked)."""

    @property
    def id(self) -> str:
        """The bundle's id (``manifest_id``) as loaded: what every Result, JSON line and served answer carries."""
        return self.manifest_sha256[:16] if self.manifest_sha256 else manifest_id(self.root / MANIFEST)

    @property
    def method(self) -> str:
        return self.manifest.method

    def path(self, relative: str) -> Path:
        """A file the manifest names; it must lie inside the bundle (no absolute path, '..' or symlink out)."""
        rel = PurePosixPath(relative)
        if not relative or rel.is_absolute() or ".." in rel.parts or "\\" in relative:
            raise BundleError(
                f"bundle {self.root} is invalid: the manifest names {relative!r}, which is not a path inside the bundle"
            )
        full = self.root / rel
        if not full.resolve().is_relative_to(self.root.resolve()):
            raise BundleError(f"bundle {self.root} is invalid: {relative} points outside the bundle (symbolic link)")
        return full

    def stage_path(self, name: str) -> Path:
        return self.path(self.manifest.stage(name).file)

    def extra(self, name: str) -> np.ndarray:
        for e in self.manifest.extras:
            if e.name == name:
                try:
                    return np.load(self.path(e.file), allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise BundleError(f"bundle {self.root}: cannot read {e.file}: {exc}") from None
        raise BundleError(f"bundle {self.root} has no extra {name!r}")

    def files(self) -> list[tuple[str, str]]:
        """(path, sha256) of every file the manifest lists."""
        entries: list[tuple[str, str]] = [(s.file, s.sha256) for s in self.manifest.stages]
        entries += [(e.file, e.sha256) for e in self.manifest.extras]
        entries += [(f.file, f.sha256) for es in self.manifest.engines for f in es.files]
        entries += [(q.file, q.sha256) for q in (self.manifest.int8.stages if self.manifest.int8 else [])]
        return entries

    def with_int8(self) -> Bundle:
        """This bundle with its INT8 graphs in place of the fp32 ones, for the ONNX Runtime backends; the
        manifest on disk is unchanged."""
        int8 = self.manifest.int8
        if int8 is None or not int8.stages:
            raise BundleError(
                f"bundle {self.root} has no INT8 graphs; make them with: edgead export {self.root} "
                "--quantize int8 --calibration GOOD_IMAGES"
            )
        chosen = {q.stage: q for q in int8.stages}
        swapped = [
            dataclasses.replace(st, file=chosen[st.name].file, sha256=chosen[st.name].sha256)
            if st.name in chosen
            else st
            for st in self.manifest.stages
        ]
        return dataclasses.replace(self, manifest=dataclasses.replace(self.manifest, stages=swapped))

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256, and that there is no other file.

        An unlisted file is covered by neither the integrity line nor a signature, yet a runtime may
        read it (ONNX external weights beside a graph): it is refused, not ignored.
        """
        listed = {rel for rel, _ in self.files()} | {MANIFEST, SIGNATURE}
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if (p.is_file() or p.is_symlink()) and rel not in listed and RUNTIME_CACHE_SUFFIX not in p.name:
                raise BundleError(
                    f"bundle {self.root} holds {rel}, a file its manifest does not list (nothing "
                    "vouches for it); remove it, or re-export the bundle"
                )
        for rel, digest in self.files():
            p = self.path(rel)
            if not p.is_file():
                raise BundleError(f"bundle {self.root} is incomplete: {rel} is missing")
            if sha256_file(p) != digest:
                raise BundleError(
                    f"bundle {self.root} is corrupt: sha256 of {rel} does not match the manifest "
                    "(re-export the bundle with 'edgead export')"
                )

    @property
    def signed(self) -> bool:
        return (self.root / SIGNATURE).is_file()

    def save_manifest(self, sign_key: str | Path | None = None) -> bool:
        """Write the manifest (a change invalidates any signature: re-signed with ``sign_key``).

        Returns True when a signature had to be dropped (the bundle must be signed again).
        """
        was_signed = self.signed
        self.manifest_sha256 = _write_manifest(self.root, self.manifest)
        if sign_key is not None:
            sign(self.root, sign_key)
            return False
        return was_signed


def _write_manifest(root: Path, manifest: Manifest) -> str:
    """Write the manifest with its integrity line; the sha256 of the bytes written."""

    body = to_yaml(to_dict(manifest))
    text = body + INTEGRITY + hashlib.sha256(body.encode()).hexdigest() + "\n"
    atomic_write(root / MANIFEST, text)
    (root / SIGNATURE).unlink(missing_ok=True)  # it covered the previous manifest
    return hashlib.sha256(text.encode()).hexdigest()


MAX_MANIFEST_BYTES = 16 << 20
"""A manifest is a few kB (a few MB with long histories); anything larger is refused before it is read."""


def _manifest_size(mf: Path) -> None:
    size = mf.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{mf} is {size / 2**20:.0f} MB, more than a manifest can be ({MAX_MANIFEST_BYTES >> 20} MB); "
            "it is not one edgead wrote"
        )


def _read_manifest(mf: Path) -> tuple[dict[str, Any], str]:
    """The manifest's contents and the sha256 of the bytes read."""
    _manifest_size(mf)
    data = mf.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{mf} is corrupt: not a text file") from None
    body, sep, digest = text.rpartition(INTEGRITY)
    if sep and hashlib.sha256(body.encode()).hexdigest() != digest.strip():  # before anything is parsed
        raise BundleError(
            f"{mf} was changed after edgead wrote it (its sha256 does not match); re-export "
            "the bundle, or change thresholds with 'edgead calibrate'"
        )
    raw = read_yaml_text(body if sep else text, str(mf), BundleError)
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{mf.parent}: bundle schema version {version!r} is not supported by edgead {__version__} "
            f"(supports {SCHEMA_VERSION}); re-export it with this edgead version"
        )
    if not sep:
        raise BundleError(f"{mf} has no integrity line (edited by hand or truncated); re-export the bundle")
    return raw, hashlib.sha256(data).hexdigest()


def _in_range(value: float | None, lo: float, hi: float, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{where} must lie in [{lo:g}, {hi:g}], got {value}")


def check_values(m: Manifest) -> None:
    """The values the runtime decides with are finite and in range; ConfigError naming the key otherwise."""
    for name in ("preprocess", "scoring", "params", "calibration", "products", "int8"):
        check_finite(getattr(m, name), f"manifest.{name}")
    if any(v <= 0 for v in m.preprocess.std) or any(v < 1 for v in m.preprocess.image_size):
        raise ConfigError(f"manifest.preprocess needs std > 0 and a positive image_size, got {m.preprocess}")
    if m.scoring.image_score not in SCORE_RULES:
        raise BundleError(
            f"manifest.scoring.image_score {m.scoring.image_score!r} is not a score rule of this "
            f"edgead ({', '.join(SCORE_RULES.names())}); update edgead or install the plugin that has it"
        )
    _in_range(m.scoring.smoothing_sigma, 0, 100, "manifest.scoring.smoothing_sigma")
    _in_range(m.scoring.top_k, 1, 1 << 30, "manifest.scoring.top_k")
    _in_range(m.scoring.pool, 1, 1 << 16, "manifest.scoring.pool")
    cals = {"calibration": m.calibration} if m.calibration else {}
    cals.update({f"products.{k}": c for k, c in m.products.items()})
    for key, c in cals.items():
        where = f"manifest.{key}"
        _in_range(c.n_images, 1, 1 << 31, f"{where}.n_images")
        for level in ("image", "pixel"):
            st = getattr(c, level)
            if st.std < 0 or st.min > st.max:
                raise ConfigError(f"{where}.{level} needs std >= 0 and min <= max, got {st}")
        _in_range(c.k, 0, 1e6, f"{where}.k")
        _in_range(c.target_frr, 0, 0.5, f"{where}.target_frr", optional=True)
        _in_range(c.confidence, 0.5, 1, f"{where}.confidence", optional=True)
        _in_range(c.calibration_frr, 0, 1, f"{where}.calibration_frr")
        _in_range(c.synthetic_miss_rate, 0, 1, f"{where}.synthetic_miss_rate", optional=True)


def _newer(version: str, than: str) -> bool:
    """Whether the release ``version`` (X.Y.Z) is later than ``than``; False for anything else."""

    def parts(v: str) -> tuple[int, ...] | None:
        numbers = v.split("+")[0].split(".")
        return tuple(int(n) for n in numbers) if all(n.isdigit() for n in numbers) and numbers[0] else None

    a, b = parts(version), parts(than)
    return a is not None and b is not None and a > b


def load_bundle(path: str | Path, verify: bool = True, trusted_keys: list[Path] | None = None) -> Bundle:
    """Open a bundle directory, check its manifest, schema and (by default) every file's sha256.

    ``trusted_keys`` (default: the files in $EDGEAD_TRUSTED_KEYS): when any are given, the bundle
    must carry a valid signature by one of them.
    """

    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle not found: {root}")
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (expected a folder with {MANIFEST})")
    mf = root / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing")
    keys = trusted_keys if trusted_keys is not None else trusted_keys_from_env()
    if keys:  # before the manifest is interpreted; its size is checked before it is read
        _manifest_size(mf)
        verify_signature(root, keys)
        verify = True  # a machine that trusts only signed bundles checks every file, whatever the caller asked
    raw, digest = _read_manifest(mf)
    raw_params = raw.pop("params", None)
    try:
        manifest = from_dict(Manifest, raw, "manifest")
        spec = get_method(manifest.method)
        if raw_params is None:
            raise ConfigError(f"method {manifest.method} needs a 'params' section")
        manifest.params = from_dict(spec.params, raw_params, "manifest.params")
        check_values(manifest)
    except ConfigError as exc:
        written = str(raw.get("edgead_version", ""))
        if _newer(written, __version__):
            raise BundleError(
                f"{mf.parent} was written by edgead {written}, newer than this edgead {__version__}, "
                f"and holds what this one cannot read ({exc}); update edgead to {written} or later"
            ) from None
        raise BundleError(f"{mf} is invalid: {exc}") from None
    stages = [s.name for s in manifest.stages]
    if stages != list(spec.stages):
        raise BundleError(
            f"{mf} is invalid: method {spec.name} has the stages {', '.join(spec.stages)}; "
            f"this bundle lists {', '.join(stages) or 'none'}"
        )
    missing = sorted(set(spec.extras) - {e.name for e in manifest.extras})
    if missing:
        raise BundleError(f"{mf} is invalid: method {spec.name} needs the extras {', '.join(missing)}")
    bundle = Bundle(root, manifest, digest)
    for rel, _ in bundle.files():
        bundle.path(rel)  # every path inside the bundle, also when the hashes are not checked
    if verify:
        bundle.verify()
    return bundle


class BundleWriter:
    """Builds a bundle in a temporary folder beside ``out`` and moves it in place at the end.

    An existing ``out`` is an error unless ``overwrite`` is set; then it is replaced only after
    the new bundle is complete.
    """

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out)
        self.overwrite = overwrite
        if self.out.exists() and not overwrite:
            raise BundleError(f"{self.out} already exists; pass --overwrite to replace it (nothing was changed)")
        if self.out.exists() and not self.out.is_dir():
            raise BundleError(f"{self.out} is a file, not a bundle folder; choose another --out")
        check_replaceable(self.out, lambda p: (p / MANIFEST).is_file(), "an edgead bundle")
        check_writable(self.out, "bundle")
        self.lock = exclusive(self.out, "export", creating=True)
        self.lock.__enter__()
        try:
            self.tmp = new_temp_dir(self.out, "writing")
        except BaseException:
            self.lock.__exit__(None, None, None)
            raise
        self.stages: list[StageEntry] = []
        self.extras: list[ExtraEntry] = []

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            self.lock.__exit__(None, None, None)

    def graph_path(self, stage: str) -> Path:
        p = self.tmp / "graphs" / f"{stage}.onnx"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_stage(self, contract: StageContract, opset: int) -> StageEntry:
        p = self.graph_path(contract.name)
        if not p.is_file():
            raise BundleError(f"graph for stage {contract.name} was not written to {p}")
        entry = StageEntry(
            contract.name,
            f"graphs/{contract.name}.onnx",
            sha256_file(p),
            list(contract.inputs),
            list(contract.outputs),
            opset,
            contract.description,
            contract.batch_factor,
        )
        self.stages.append(entry)
        return entry

    def add_extra(self, name: str, array: np.ndarray) -> None:
        p = self.tmp / "extras" / f"{name}.npy"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, np.ascontiguousarray(array), allow_pickle=False)
        self.extras.append(ExtraEntry(name, f"extras/{name}.npy", sha256_file(p)))

    def open_staged(self, manifest: Manifest) -> Bundle:
        """The bundle as written so far (for calibration and parity before it is final)."""
        return Bundle(self.tmp, manifest, _write_manifest(self.tmp, manifest))

    def commit(self, manifest: Manifest) -> Bundle:
        check_values(manifest)  # never write what load_bundle would refuse
        digest = _write_manifest(self.tmp, manifest)
        Bundle(self.tmp, manifest).verify()
        publish_dir(self.tmp, self.out, self.overwrite)  # replaces exactly ``out``; nothing beside it is touched
        return Bundle(self.out, manifest, digest)
