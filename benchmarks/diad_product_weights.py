"""An analysis, not a setting: what DiAD's one model for several products would score with a fusion weight
chosen per product (the export rule, on each product's own held-out good images and synthetic anomalies)
instead of one weight for all. Prints image AUROC / AUPRO on each product's test set for the bundle's global
weight, the per-product weight and the kNN map alone (docs/studies.md section 8.9).

    python benchmarks/diad_product_weights.py tire grid
"""

import json
import sys

import numpy as np

from edgead.core.bundle import load_bundle
from edgead.core.fusion import FusionParams, PatchKnnConfig, fuse
from edgead.core.metrics import aupro, auroc
from edgead.core.scoring import image_scores, smooth
from edgead.data.datasets import load_dataset
from edgead.data.io import read_mask
from edgead.export.fusion_weight import choose_weight, map_components, synthetic_anomalies
from edgead.training.data import load_images

B = load_bundle("benchmarks/results/fusion/work/diad-multi-fused.edgead")  # fusion_study.py makes it
pre, sc = B.manifest.preprocess, B.manifest.scoring
glob_params = B.manifest.params.fusion
cands = PatchKnnConfig().candidates
for prod in sys.argv[1:]:
    ds = load_dataset(f"../shared/data/{prod}", 0.1, 0)
    held = [s.path for s in ds.validation]
    good_u8 = load_images(held, pre)
    good = map_components(B, good_u8, product=prod)
    stats = FusionParams(
        0.0, [float(good[0].mean()), float(good[0].std())], [float(good[1].mean()), float(good[1].std())]
    )
    frames, masks = synthetic_anomalies(good_u8, pre.image_size[0], False, max(48, len(held)))
    w, rows = choose_weight(good, map_components(B, frames, product=prod), masks, stats, cands, sc)
    test = ds.test
    tu8 = load_images([s.path for s in test], pre)
    comp = map_components(B, tu8, product=prod)
    labels = np.array([s.label for s in test])
    gts = np.stack(
        [read_mask(s.mask_path, pre.image_size[0]) if s.mask_path else np.zeros(pre.image_size, bool) for s in test]
    )
    out = {"product": prod, "held": len(held), "chosen": w}
    for name, params in [
        ("global", glob_params),
        ("per-product", FusionParams(w, stats.reconstruction, stats.knn)),
        ("knn-alone", FusionParams(1.0, stats.reconstruction, stats.knn)),
    ]:
        maps = smooth(fuse(*comp, params), sc.smoothing_sigma)
        s = image_scores(maps, sc.image_score, sc.top_k, sc.pool)
        out[name] = (round(auroc(labels, s), 3), round(aupro(maps[labels == 1], gts[labels == 1]), 3))
    print(json.dumps(out), flush=True)
