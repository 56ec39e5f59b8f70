"""Autoencoder-only reconstruction error per product (encode -> decode, no diffusion) of latent runs.

Shows whether one autoencoder trained for several products reconstructs each of them: DiAD's maps
compare the image with its decoded reconstruction, so a product the autoencoder cannot reproduce
lights up everywhere.

    python benchmarks/autoencoder_recon.py runs/multi-diad-s runs/hazelnut_toy-diad-s \
        --data ../shared/data/tire --data ../shared/data/grid --data ../shared/data/hazelnut_toy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edgead.data.datasets import load_dataset
from edgead.data.preprocess import Preprocess
from edgead.training.checkpoint import load_weights, read_checkpoint_meta
from edgead.training.data import load_images, numpy_batch
from edgead.training.latent.autoencoder import LatentDecoder, LatentEncoder
from edgead.training.latent.networks import build_autoencoder, resolve_latent_network


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", action="append", required=True, help="a product's dataset root (repeat)")
    ap.add_argument("--out", type=Path, help="write the table as JSON here too")
    a = ap.parse_args()
    table = {}
    for run in a.runs:
        meta, config = read_checkpoint_meta(run)
        size = config.data.image_size
        ae = load_weights(run, "autoencoder", build_autoencoder(resolve_latent_network(config.model, size), size)).eval()
        scale = float(meta["stages"]["autoencoder"]["latent_scale"])
        enc, dec = LatentEncoder(ae, scale), LatentDecoder(ae, scale)
        spec = Preprocess.for_size(size)
        row = {}
        for root in a.data:  # test/good: images no run trained on
            good = [s.path for s in load_dataset(root, 0.0).test if s.label == 0]
            x = numpy_batch(load_images(good, spec), spec)
            row[Path(root).name] = round(float((dec(enc(x)) - x).abs().mean() / 2), 4)  # [0, 1] units
        table[str(run)] = row
        print(run, "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    if a.out:
        a.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
