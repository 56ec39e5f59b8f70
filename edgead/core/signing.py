"""Optional Ed25519 signatures for fleets: a line PC refuses bundles its owner did not sign.

    edgead keygen --out keys/owner             keys/owner.key (private, 0600) + keys/owner.pub
    edgead sign tire.edgead --key keys/owner.key
    EDGEAD_TRUSTED_KEYS=/etc/edgead/owner.pub edgead run --bundle tire.edgead ...   # refuses unsigned

The signature (``manifest.sig``) covers the manifest's bytes; the manifest carries the sha256 of
every other file, so the whole bundle is covered. Any change to the manifest (re-calibration,
new engines) invalidates the signature: those commands re-sign with ``--sign-key`` or say that the
bundle must be signed again. Needs ``pip install "edgead[sign]"`` (the cryptography package).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from .errors import BundleError, ConfigError, require

SIGNATURE = "manifest.sig"
TRUSTED_KEYS_ENV = "EDGEAD_TRUSTED_KEYS"
_INSTALL = 'pip install "edgead[sign]"'


def _crypto():
    require("cryptography", _INSTALL, "Bundle signatures")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_keys(prefix: str | Path) -> tuple[Path, Path]:
    serialization, ed25519 = _crypto()
    from .outputs import atomic_write, check_new_file

    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (private, public):
        check_new_file(p, False, "key file")
    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write(
        public,
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        exclusive=True,
    )
    atomic_write(
        private,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        exclusive=True,
        mode=0o600,
    )
    return private, public


def _load(path: Path, private: bool):
    serialization, ed25519 = _crypto()
    try:
        data = Path(path).read_bytes()
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read {'private' if private else 'public'} key {path}: {exc}") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(
            f"{path} is not an Ed25519 {'private' if private else 'public'} key (make one with edgead keygen)"
        )
    return key


def _raw_public(key) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(root: Path, private_key: str | Path) -> str:
    """Sign the bundle's manifest; returns the signer's key id."""
    from .outputs import atomic_write

    key = _load(Path(private_key), private=True)
    manifest = (root / "manifest.yaml").read_bytes()
    raw = _raw_public(key.public_key())
    record = {
        "algorithm": "ed25519",
        "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode(),
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "signature": base64.b64encode(key.sign(manifest)).decode(),
    }
    atomic_write(root / SIGNATURE, json.dumps(record, indent=2) + "\n")
    return record["key_id"]


def trusted_keys_from_env() -> list[Path]:
    value = os.environ.get(TRUSTED_KEYS_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def verify(root: Path, public_keys: list[Path]) -> str:
    """The key id of the trusted key that signed this bundle, or BundleError."""
    from cryptography.exceptions import InvalidSignature

    sig = root / SIGNATURE
    if not sig.is_file():
        raise BundleError(
            f"bundle {root} is not signed, and this machine only accepts signed bundles "
            f"({TRUSTED_KEYS_ENV}); ask its owner to run: edgead sign {root} --key OWNER.key"
        )
    try:
        record = json.loads(sig.read_bytes().decode("utf-8"))
        signature = base64.b64decode(record["signature"])
        signer = record["key_id"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{sig} is corrupt: {exc}") from None
    manifest = (root / "manifest.yaml").read_bytes()
    keys = {key_id(_raw_public(k)): k for k in (_load(p, private=False) for p in public_keys)}
    if signer not in keys:
        raise BundleError(
            f"bundle {root} is signed by key {signer}, which is not among the trusted keys "
            f"({', '.join(keys) or 'none'})"
        )
    try:
        keys[signer].verify(signature, manifest)
    except InvalidSignature:
        raise BundleError(
            f"bundle {root}: the signature does not match manifest.yaml (changed after signing); "
            "sign it again or re-export"
        ) from None
    return signer
