"""Looking after bundles: edgead calibrate (thresholds), keygen, sign, verify."""

from __future__ import annotations

import json

import click

from .common import backend_option, resigned


# --------------------------------------------------------------------------------- calibrate
@click.command()
@click.argument("bundle", type=click.Path())
@click.option(
    "--good",
    "good",
    multiple=True,
    required=True,
    help="Anomaly-free parts: image, folder, glob, video file, or a camera/stream with --max-frames. Repeatable.",
)
@click.option(
    "--target-frr",
    type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
    help="False-reject rate the threshold aims at (default 0.01).",
)
@click.option(
    "--confidence", type=click.FloatRange(0.5, 1, max_open=True), help="Confidence in that rate (default 0.95)."
)
@click.option("--rule", type=click.Choice(["tolerance", "k_sigma"]), help="Threshold rule (default tolerance).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Use at most this many frames.")
@backend_option
@click.option("--sign-key", type=click.Path(dir_okay=False), help="Sign the changed bundle with this private key.")
@click.option("--product", help="Product to re-calibrate (bundles that serve several products).")
@click.option(
    "--refuse-outliers",
    is_flag=True,
    help="Refuse to calibrate when some --good images look like defective parts (the bundle judges them "
    "anomalous and they score far above the others); by default they are left out and named.",
)
@click.option(
    "--keep-suspects",
    is_flag=True,
    help="Use --good images that look like defective parts anyway (they are good parts).",
)
@click.option(
    "--accept-misses",
    is_flag=True,
    help="Accept a threshold that passes far more of the bundle's synthetic anomalies than the current one.",
)
def calibrate(
    bundle,
    good,
    target_frr,
    confidence,
    rule,
    max_frames,
    backend,
    sign_key,
    product,
    refuse_outliers,
    keep_suspects,
    accept_misses,
) -> None:
    """Re-calibrate a bundle's thresholds on a line's own good parts (no retraining, no PyTorch).

    What the bundle knows guards the new threshold: given images that look like defective parts are left out and
    named, a threshold that would pass far more of the bundle's synthetic anomalies is refused, and INT8 stages
    are measured again against the new margin (dropped when they no longer hold). Nothing changes on a refusal.

    \b
    edgead calibrate tire.edgead --good line_good/ --target-frr 0.005
    edgead calibrate tire.edgead --good good_shift.mp4
    """
    from .. import api

    r = api.calibrate(
        bundle,
        list(good),
        target_frr=target_frr,
        confidence=confidence,
        rule=rule,
        max_frames=max_frames,
        backend=backend,
        product=product,
        refuse_outliers=refuse_outliers,
        keep_suspects=keep_suspects,
        accept_misses=accept_misses,
        sign_key=sign_key,
    )
    resigned(r.signature_dropped, r.bundle)
    for w in r.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(json.dumps(r.report))


# ------------------------------------------------------------------------------- signatures
@click.command()
@click.option("--out", required=True, metavar="PREFIX", help="Writes PREFIX.key (private, 0600) and PREFIX.pub.")
def keygen(out) -> None:
    """Make an Ed25519 key pair for signing bundles (keep the .key file on the build server)."""
    from ..core.signing import generate_keys

    private, public = generate_keys(out)
    click.echo(json.dumps({"private_key": str(private), "public_key": str(public)}))


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--key", required=True, type=click.Path(dir_okay=False), help="Private key from 'edgead keygen'.")
def sign(bundle, key) -> None:
    """Sign a bundle, so that line PCs with EDGEAD_TRUSTED_KEYS accept it."""
    from ..core.bundle import load_bundle
    from ..core.signing import sign as sign_bundle

    b = load_bundle(bundle, trusted_keys=[])  # integrity first: never sign a corrupt bundle
    click.echo(json.dumps({"bundle": str(b.root), "signed_by": sign_bundle(b.root, key)}))


@click.command()
@click.argument("bundle", type=click.Path())
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Trusted public key (repeatable; default: $EDGEAD_TRUSTED_KEYS).",
)
def verify(bundle, keys) -> None:
    """Check a bundle: manifest integrity, every file's sha256, paths, and the signature if keys are given."""
    from pathlib import Path as _P

    from ..core.bundle import load_bundle
    from ..core.signing import trusted_keys_from_env
    from ..core.signing import verify as verify_signature

    trusted = [_P(k) for k in keys] or trusted_keys_from_env()
    b = load_bundle(bundle, trusted_keys=[])
    signer = verify_signature(b.root, trusted) if trusted else None
    click.echo(
        json.dumps(
            {
                "bundle": str(b.root),
                "files": len(b.files()) + 1,
                "integrity": "ok",
                "signed": b.signed,
                "signed_by_trusted_key": signer,
            }
        )
    )
