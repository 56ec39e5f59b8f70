import json

import numpy as np
import pytest
import torch

from edgead.core.config import load_config
from edgead.core.errors import ConfigError, EdgeadError
from edgead.methods.diffusionad.losses import focal_loss, mask_loss
from edgead.methods.diffusionad.networks import (
    PRESETS,
    build_denoiser,
    build_segmenter,
    resolve_network,
)
from edgead.methods.diffusionad.train import DiffusionADTrainer
from edgead.methods.diffusionad.train import load_model as load_diffusionad
from edgead.training import train

from .conftest import TINY


def test_checkpoint_round_trip_gives_same_outputs(tiny_run):
    a, b = load_diffusionad(tiny_run), load_diffusionad(tiny_run)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    n = torch.randn(1, 3, 64, 64)
    ma, _ = a.predict_mask(x, n, n)
    mb, _ = b.predict_mask(x, n, n)
    assert torch.equal(ma, mb)
    log = [json.loads(line) for line in (tiny_run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and np.isfinite(log[-1]["total"])


@pytest.mark.slow
def test_refuses_to_overwrite_and_resumes(tiny_run, demo_data, tmp_path):
    cfg = load_config(None, [f"data.path={demo_data}", "train.steps=30", *TINY])
    with pytest.raises(EdgeadError, match="already holds a training run; pass --resume"):
        DiffusionADTrainer(cfg, tiny_run).fit(progress=False)
    run = tmp_path / "r"
    DiffusionADTrainer(load_config(None, [f"data.path={demo_data}", "train.steps=3", *TINY]), run).fit(progress=False)
    before = load_diffusionad(run).denoiser.state_dict()["conv_in.weight"].clone()
    cfg5 = load_config(None, [f"data.path={demo_data}", "train.steps=5", *TINY])
    out = DiffusionADTrainer(cfg5, run, resume=True).fit(progress=False)
    assert out["steps"] == 5
    assert not torch.equal(before, load_diffusionad(run).denoiser.state_dict()["conv_in.weight"])
    other = load_config(None, [f"data.path={demo_data}", "train.steps=9", *TINY, "data.image_size=96"])
    with pytest.raises(EdgeadError, match="another method, model or image size"):
        DiffusionADTrainer(other, run, resume=True).fit(progress=False)


@pytest.mark.slow
def test_training_reduces_the_losses(demo_data, tmp_path):
    cfg = load_config(None, [f"data.path={demo_data}", "train.steps=60", *TINY])
    train(cfg, tmp_path / "r", progress=False)
    log = [json.loads(line) for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 50, 60]  # the first step, every log_every, the last
    assert log[-1]["noise"] < 0.5 * log[0]["noise"]
    assert log[-1]["mask"] < 0.8 * log[0]["mask"]


def test_no_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="no training data"):
        train(load_config(None, TINY), "x")


def test_focal_loss_matches_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    expected = (-((1 - p_t) ** 4) * torch.log(p_t)).mean()
    assert focal_loss(logits, target, 4.0).item() == pytest.approx(expected.item(), rel=1e-5)
    smooth = torch.nn.functional.smooth_l1_loss(p, target)
    assert mask_loss(logits, target).item() == pytest.approx((smooth + 5 * expected).item(), rel=1e-5)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build(preset):
    cfg = load_config(None, [f"model.preset={preset}"])
    net = resolve_network(cfg.model, 256)
    seg = build_segmenter(net)
    if preset in ("tiny", "s"):
        den = build_denoiser(net, 256)
        x = torch.zeros(1, 3, 64, 64)
        assert den(x, torch.tensor([1.0])).sample.shape == x.shape
        assert seg(x, x).shape == (1, 1, 64, 64)
    assert sum(p.numel() for p in seg.parameters()) > 0


def test_network_divisibility_is_checked():
    cfg = load_config(None, ["model.preset=paper"])
    with pytest.raises(ConfigError, match="must be divisible by"):
        resolve_network(cfg.model, 48)
    bad = load_config(None, ["model.block_out_channels=[30, 60]"])
    with pytest.raises(ConfigError, match="divisible by model.norm_num_groups"):
        resolve_network(bad.model, 64)
