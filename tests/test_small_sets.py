"""DiffusionAD's options for small training sets: augmentation, a held-out share for the segmentation
network, and the snapshot chosen on synthetic anomalies."""

import shutil

import pytest
import torch

from edgead.core.errors import ConfigError


def test_geometric_augmentation_turns_images_and_foregrounds_together():
    from edgead.training.augment import geometric

    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(64, 3, 1, 1)
    fg = (x[:, :1] > 7).to(torch.uint8)
    out, fg_out = geometric(x, fg, "flip_rotate", torch.Generator().manual_seed(0))
    seen = {tuple(o[0].flatten().tolist()) for o in out}
    assert len(seen) == 8  # the eight symmetries of a square, each sample its own
    assert torch.equal(fg_out, (out[:, :1] > 7).to(torch.uint8))  # the foreground moved with its image
    flips, _ = geometric(x, None, "flip", torch.Generator().manual_seed(0))
    assert len({tuple(o[0].flatten().tolist()) for o in flips}) == 4  # flips only: no quarter turns
    assert torch.equal(geometric(x, fg, "none", torch.Generator())[0], x)
    with pytest.raises(ValueError, match="augment must be one of 'none', 'flip', 'flip_rotate'"):
        geometric(x, None, "mirror", torch.Generator())


def test_photometric_augmentation_stays_in_range_and_varies_per_sample():
    from edgead.training.augment import photometric

    x = torch.rand(16, 3, 8, 8)
    out = photometric(x, 0.4, torch.Generator().manual_seed(1))
    assert out.min() >= 0 and out.max() <= 1
    assert len({round(float((o - xi).mean()), 4) for o, xi in zip(out, x)}) > 8
    assert torch.equal(photometric(x, 0.0, torch.Generator()), x)


def test_segmenter_holdout_splits_without_overlap():
    from edgead.methods.diffusionad.train import split_for_segmenter

    den, seg = split_for_segmenter(22, 0.25, seed=0)
    assert len(seg) == 6 and len(den) == 16 and not set(den.tolist()) & set(seg.tolist())
    assert sorted(den.tolist() + seg.tolist()) == list(range(22))
    assert split_for_segmenter(22, 0.0, 0)[1] is None
    with pytest.raises(ConfigError, match="leaves the denoiser no training image of 1"):
        split_for_segmenter(1, 0.5, 0)


@pytest.mark.slow
def test_small_set_training_keeps_the_best_snapshot_and_exports_it(demo_data, tmp_path):
    from safetensors.torch import load_file

    from edgead.core.config import load_config
    from edgead.export.flow import export_run
    from edgead.methods.diffusionad.train import load_model
    from edgead.training import train
    from edgead.training.checkpoint import read_checkpoint_meta

    from .conftest import TINY

    cfg = load_config(
        None,
        [
            f"data.path={demo_data}",
            *TINY,
            "train.steps=6",
            "diffusionad.augment=flip_rotate",
            "diffusionad.photometric=0.2",
            "diffusionad.segmenter_holdout=0.25",
            "diffusionad.select_every=3",
        ],
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    meta, _ = read_checkpoint_meta(tmp_path / "run")
    chosen = meta["selected"]
    assert chosen == summary["selected"] and chosen["step"] in (3, 6) and 0 <= chosen["synthetic_auroc"] <= 1
    model = load_model(tmp_path / "run")
    saved = load_file(str(tmp_path / "run" / "selected_segmenter.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in model.segmenter.state_dict().items())
    bundle, parity = export_run(tmp_path / "run", tmp_path / "b.edgead", parity_images=2, progress=False)
    assert parity["passed"]
    with pytest.raises(ConfigError, match="diffusionad.segmenter_holdout must be in"):
        load_config(None, ["diffusionad.segmenter_holdout=0.9"])


def test_selection_needs_held_out_images(demo_data, tmp_path):
    from edgead.core.config import load_config
    from edgead.training import train

    from .conftest import TINY

    plain = tmp_path / "plain"  # a good/ folder, nothing held out
    shutil.copytree(demo_data / "train" / "good", plain / "good")
    cfg = load_config(
        None, [f"data.path={plain}", *TINY, "train.steps=2", "data.validation_fraction=0", "diffusionad.select_every=1"]
    )
    with pytest.raises(ConfigError, match="diffusionad.select_every needs validation images"):
        train(cfg, tmp_path / "run", progress=False)
