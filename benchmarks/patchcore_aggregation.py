"""Where PatchCore's image AUROC went: the order of upsampling and neighbourhood averaging of the patch descriptor,
with the whole memory bank (no coreset), exact L2 nearest neighbours, the map blurred (sigma 4), image score = max.

    python benchmarks/patchcore_aggregation.py ../shared/data/tire pool_first pool_first_padded upsample_first

pool_first: each scale averaged over 3x3 at its own stride (padding not counted), the coarse one then upsampled
(edgead before 0.9); pool_first_padded: the same with padding counted (anomalib's AvgPool2d(3, 1, 1));
upsample_first: the coarse scale upsampled to the fine grid, concatenated, then averaged (edgead 0.9).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from edgead.core.metrics import aupro, auroc
from edgead.core.preprocess import Preprocess
from edgead.core.scoring import smooth
from edgead.data.datasets import load_dataset
from edgead.data.io import read_mask
from edgead.training.backbone import load_backbone
from edgead.training.data import load_images, numpy_batch


def descriptors(f8: torch.Tensor, f16: torch.Tensor, variant: str) -> torch.Tensor:
    up = dict(size=f8.shape[-2:], mode="bilinear", align_corners=False)
    if variant == "upsample_first":
        return F.avg_pool2d(torch.cat([f8, F.interpolate(f16, **up)], 1), 3, 1, 1, count_include_pad=False)
    padded = variant == "pool_first_padded"
    a, b = (F.avg_pool2d(f, 3, 1, 1, count_include_pad=padded) for f in (f8, f16))
    return torch.cat([a, F.interpolate(b, **up)], 1)


def main() -> None:
    root, variants = Path(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(2)
    ds, spec, backbone = load_dataset(root, 0.1, 0), Preprocess.for_size(256), load_backbone()

    @torch.no_grad()
    def features(paths):
        images = load_images(paths, spec)
        out = [backbone(numpy_batch(images[i : i + 8], spec)) for i in range(0, len(images), 8)]
        return torch.cat([o[1] for o in out]), torch.cat([o[2] for o in out])

    train, test = features([s.path for s in ds.train]), features([s.path for s in ds.test])
    labels = np.array([s.label for s in ds.test])
    masks = np.stack([read_mask(s.mask_path, 256) if s.mask_path else np.zeros((256, 256), bool) for s in ds.test])
    for variant in variants:
        t0 = time.time()
        bank = descriptors(*train, variant).permute(0, 2, 3, 1).reshape(-1, 152)
        q = descriptors(*test, variant)
        b, c, h, w = q.shape
        queries, bank_sq = q.permute(0, 2, 3, 1).reshape(-1, c), (bank * bank).sum(1)
        nearest = (
            torch.cat(
                [
                    ((p * p).sum(1, keepdim=True) - 2 * p @ bank.T + bank_sq).min(1).values.clamp_min(0).sqrt()
                    for p in queries.split(2048)
                ]
            )
            .reshape(b, h, w)
            .numpy()
        )
        maps = smooth(np.stack([cv2.resize(m, (256, 256), interpolation=cv2.INTER_LINEAR) for m in nearest]), 4.0)
        scores = maps.reshape(b, -1).max(1)
        per = {
            d: round(
                auroc(
                    labels[[s.defect in ("good", d) for s in ds.test]],
                    scores[[s.defect in ("good", d) for s in ds.test]],
                ),
                3,
            )
            for d in sorted({s.defect for s in ds.test} - {"good"})
        }
        print(
            f"{variant}: image AUROC {auroc(labels, scores):.3f} AUPRO {aupro(maps, masks):.3f} per defect {per} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
