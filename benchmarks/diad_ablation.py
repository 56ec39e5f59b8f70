"""DiAD's SFF ablation without retraining the shared stages: copy a trained run's autoencoder and
latent UNet (stage A) into a new run whose configuration turns SFF off, then train stage B and the
selection there. Stage A is identical for both variants, so the comparison isolates SFF.

    python benchmarks/diad_ablation.py runs/multi-diad-s runs/multi-diad-s-nosff
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edgead.core.codec import from_dict, to_dict
from edgead.core.config import ExperimentConfig
from edgead.training import train
from edgead.training.checkpoint import (
    CONFIG_FILE,
    read_checkpoint_meta,
    save_checkpoint,
)

SHARED = ("autoencoder", "denoiser")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", dest="sets", nargs="*", default=["diad.sff=false"])
    a = ap.parse_args()
    meta, config = read_checkpoint_meta(a.run, "diad")
    stages = meta.get("stages", {})
    if not all(stages.get(s, {}).get("complete") for s in SHARED):
        raise SystemExit(f"{a.run}: stages {', '.join(SHARED)} must be complete")
    from edgead.core.codec import apply_overrides

    variant = from_dict(ExperimentConfig, apply_overrides(to_dict(config), a.sets)).validate()
    a.out.mkdir(parents=True, exist_ok=False)
    for name in SHARED:
        shutil.copy(a.run / f"{name}.safetensors", a.out / f"{name}.safetensors")
    keep = {k: v for k, v in meta.items() if k not in ("edgead_version", "method", "network", "config", "stages")}
    save_checkpoint(
        a.out, variant, None, {}, None, {**keep, "stages": {s: stages[s] for s in SHARED}, "ablation_of": str(a.run)}
    )
    assert (a.out / CONFIG_FILE).is_file()
    print(train(variant, a.out, resume=True))


if __name__ == "__main__":
    main()
