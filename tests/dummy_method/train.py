"""The test method's training: the mean pooled colour of the training images (PyTorch)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from edgead.core.preprocess import Preprocess
from edgead.data.datasets import load_dataset
from edgead.training.checkpoint import save_checkpoint
from edgead.training.data import load_images, numpy_batch


def train(config, run_dir: Path, resume=False, progress=True) -> dict:
    ds = load_dataset(config.data.path, config.data.validation_fraction, config.data.split_seed)
    spec = Preprocess.for_size(config.data.image_size)
    pooled = torch.nn.functional.avg_pool2d(numpy_batch(load_images([s.path for s in ds.train], spec), spec), 8)
    save_checkpoint(run_dir, config, None, {}, extra={"steps_done": 0, "dataset": ds.provenance()})
    save_file({"reference": pooled.mean(0).contiguous()}, str(run_dir / "reference.safetensors"))
    return {"images": len(ds.train)}
