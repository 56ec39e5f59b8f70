"""Autoencoder-only reconstruction error per product (encode -> decode, no diffusion) of latent runs.

Shows whether one autoencoder trained for several products reconstructs each of them: DiAD's maps
compare the image with its decoded reconstruction, so a product the autoencoder cannot reproduce
lights up everywhere. (Training runs the same check on held-out images and warns.)

    python benchmarks/autoencoder_recon.py runs/multi-diad-s runs/hazelnut_toy-diad-s \
        --data ../shared/data/tire --data ../shared/data/grid --data ../shared/data/hazelnut_toy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.core.preprocess import Preprocess
from edgead.data.datasets import load_dataset
from edgead.training.checkpoint import read_checkpoint_meta
from edgead.training.data import load_images
from edgead.training.latent.autoencoder import load_codec, reconstruction_error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", action="append", required=True, help="a product's dataset root (repeat)")
    ap.add_argument("--out", type=Path, help="write the table as JSON here too")
    a = ap.parse_args()
    table = {}
    for run in a.runs:
        meta, config = read_checkpoint_meta(run)
        encoder, decoder = load_codec(run, config, meta)
        spec = Preprocess.for_size(config.data.image_size)
        row = {}
        for root in a.data:  # test/good: images no run trained on
            good = load_images([s.path for s in load_dataset(root, 0.0).test if s.label == 0], spec)
            row[Path(root).name] = round(reconstruction_error(encoder, decoder, good, spec), 4)
        table[str(run)] = row
        print(run, "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    if a.out:
        a.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
