"""Memory banks of patch descriptors: the greedy k-center coreset (PatchCore §3.2) every method fits with,
and stage ``patches`` of the latent methods.

PatchCore's anomaly map, and the latent methods' patch kNN map (edgead/runtime/patch_knn.py), measure how far
each patch of a frame lies from its nearest neighbour in such a bank; a latent method fits its bank from the
patch output of its own feature_extractor stage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..core.errors import EdgeadError
from ..core.preprocess import Preprocess
from ..core.progress import report
from .backbone import FeatureStages
from .budget import budget_deadline, now
from .checkpoint import save_tensors
from .data import numpy_batch

log = logging.getLogger(__name__)
PATCH_BANK_FILE = "patch_bank.safetensors"
PATCH_BANK_IMAGES = "patch_bank_images.json"


def greedy_coreset(
    x: torch.Tensor,
    n: int,
    seed: int = 0,
    projection_dim: int = 128,
    progress: bool = False,
    deadline: float | None = None,
    batch: int = 128,
    pool: int = 8,
) -> torch.Tensor:
    """Indices of the greedy k-center coreset (PatchCore §3.2) on a random projection, computed on ``x``'s device.

    Exactly the greedy selection (each centre the point farthest from those chosen so far), in rounds that
    cost one matrix product each instead of one pass over every patch per centre: a round takes the
    ``batch * pool`` farthest points as candidates and picks centres among them greedily, updating only the
    candidates' distances, for as long as the farthest candidate is still farther than every point outside
    the pool (distances only shrink, so the greedy choice is then among the candidates); all distances are
    then updated at once with the round's centres. ``deadline`` (``now()`` seconds): the
    centres chosen by then (the ones that cover most) and a random sample of the other patches for the rest,
    so the bank always holds ``n`` patches (a bank cut to a handful would make the kNN map meaningless)."""
    from tqdm.auto import tqdm

    total = x.shape[0]
    if n >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(seed)
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=g) / projection_dim**0.5
        x = x @ proj.to(x.device)
    sq = (x * x).sum(1)
    chosen = [int(torch.randint(total, (1,), generator=g))]
    dist = (sq - 2 * x @ x[chosen[0]] + sq[chosen[0]]).clamp_min_(0)
    bar = tqdm(total=n, initial=1, disable=not progress, desc="coreset", unit="patch")
    while len(chosen) < n:
        if deadline is not None and now() > deadline:
            bar.close()
            log.warning(
                "the time budget ended the greedy coreset at %d of %d patches; the other %d are a random "
                "sample (a run with a larger --max-minutes chooses them all)",
                len(chosen),
                n,
                n - len(chosen),
            )
            rest = torch.ones(total, dtype=torch.bool)
            rest[chosen] = False
            others = torch.nonzero(rest).flatten()
            return torch.cat(
                [torch.tensor(chosen), others[torch.randperm(len(others), generator=g)[: n - len(chosen)]]]
            )
        size = min(total, batch * pool + 1)
        top = torch.topk(dist, size)
        if size == total:  # every point is a candidate
            candidates, far, beyond = top.indices, top.values.clone(), -1.0
        else:
            candidates, far, beyond = top.indices[:-1], top.values[:-1].clone(), float(top.values[-1])
        cx, csq = x[candidates], sq[candidates]
        picked: list[int] = []
        while len(picked) < batch and len(chosen) + len(picked) < n:
            j = int(torch.argmax(far))
            if float(far[j]) <= beyond:  # a point outside the pool may be as far now: next round
                break
            picked.append(j)
            far = torch.minimum(far, (csq - 2 * cx @ cx[j] + csq[j]).clamp_min_(0))
        new = candidates[torch.tensor(picked)] if picked else torch.argmax(dist)[None]
        chosen += new.tolist()
        centres = x[new]
        dist = torch.minimum(dist, (sq[:, None] - 2 * x @ centres.T + sq[new][None]).min(1).values.clamp_min_(0))
        bar.update(len(new))
        report("coreset", min(len(chosen), n), n)
    bar.close()
    return torch.tensor(chosen[:n])


@torch.no_grad()
def extract(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    spec: Preprocess,
    batch: int = 8,
    device: torch.device | None = None,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] images -> the model's output for each (run on ``device``), concatenated on the CPU."""
    out = [
        model(numpy_batch(images[i : i + batch], spec).to(device or "cpu")).cpu() for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


def fit_memory_bank(
    patches: torch.Tensor,
    fraction: float,
    seed: int = 0,
    progress: bool = False,
    deadline: float | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coreset memory bank [M, C] and, for each row, the index of the image it came from [M] (int32): what
    leaving one training image out of the bank needs (export's cross-fitted calibration scores)."""
    flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
    n = max(1, int(round(flat.shape[0] * fraction)))
    picked = greedy_coreset(flat.to(device or "cpu"), n, seed=seed, progress=progress, deadline=deadline)
    per_image = patches.shape[2] * patches.shape[3]
    return flat[picked].contiguous(), (picked // per_image).to(torch.int32)


def fit_patch_bank(
    features: FeatureStages,
    images: np.ndarray,
    spec: Preprocess,
    fraction: float,
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = False,
    deadline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, H, W, 3] training images -> the coreset of their patch descriptors [M, C] and each row's image
    index [M] (``fit_memory_bank``)."""
    if not features.patches:
        raise ValueError("the feature stages compute no patch descriptors")
    patches = extract(lambda x: features(x)[-1], images, spec, device=device)
    return fit_memory_bank(patches, fraction, seed, progress, deadline, device)


def train_patch_bank(
    run,
    features: FeatureStages,
    images: torch.Tensor,
    spec: Preprocess,
    fraction: float,
    progress: bool,
    record: dict | None = None,
    names: list[str] | None = None,
) -> torch.Tensor:
    """Fit the bank on the run's training images (uint8 [N, 3, H, W] on the device) and record the stage.
    ``names``: the images' paths relative to the data set, in order; with each row's image index they let export
    score every training image against the bank without its own rows (cross-fitted calibration)."""
    t0 = now()
    device = images.device
    bank, sources = fit_patch_bank(
        features.to(device),
        images.permute(0, 2, 3, 1).cpu().numpy(),
        spec,
        fraction,
        run.config.train.seed,
        device,
        progress,
        deadline=budget_deadline(),
    )
    save_tensors(run.run_dir / PATCH_BANK_FILE, {"patch_bank": bank, "patch_bank_source": sources})
    if names is not None:
        (run.run_dir / PATCH_BANK_IMAGES).write_text(json.dumps(names))
    run.save("patches", {}, 1, now() - t0, 1, extra={"patch_bank": list(bank.shape), **(record or {})})
    return bank


def bank_image_names(datasets) -> list[str] | None:
    """The training images' paths relative to their data set, in the order a bank's sources index them (one data
    set only: export cross-fits single-product bundles)."""
    if len(datasets) != 1:
        return None
    return [str(s.path.relative_to(datasets[0].root)) for s in datasets[0].train]


def load_bank_sources(
    run_dir: Path, file: str = PATCH_BANK_FILE, key: str = "patch_bank_source", names_file: str = PATCH_BANK_IMAGES
) -> tuple[np.ndarray, list[str]] | None:
    """Each bank row's training image and the images' names (relative to the data set), when the run recorded them
    (trained with edgead 0.10 or later, on one data set). PatchCore's memory bank keeps them under its own names."""
    f, names = Path(run_dir) / file, Path(run_dir) / names_file
    if not f.is_file() or not names.is_file():
        return None
    tensors = load_file(str(f))
    if key not in tensors:
        return None
    return tensors[key].numpy(), json.loads(names.read_text())


def load_patch_bank(run_dir: Path) -> np.ndarray:
    f = Path(run_dir) / PATCH_BANK_FILE
    if not f.is_file():
        raise EdgeadError(
            f"{run_dir} has no patch memory bank; fit it with: edgead train --out {run_dir} --stage patches"
        )
    return load_file(str(f))["patch_bank"].numpy().astype(np.float32)
