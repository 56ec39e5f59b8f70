"""DiAD: the SG network's wiring, one model for several products, the SG/SFF ablation switches."""

import json

import numpy as np
import pytest
import torch
import yaml

from edgead.core.errors import BundleError

from .conftest import edgead_cli


def _unet(widths=(16, 32), layers=1, size=8):
    from edgead.training.unet import build_unet

    return build_unet(size, 4, 4, widths, layers, (), 8, 8).eval()


@pytest.mark.parametrize("widths, layers", [((16, 32), 1), ((16, 32, 32), 2)])
def test_controlled_forward_is_diffusers_and_sg_starts_as_identity(widths, layers):
    from edgead.methods.diad.networks import (
        GuidedDenoiser,
        HintEncoder,
        SemanticGuidedNetwork,
        unet_forward,
    )

    unet = _unet(widths, layers)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 700.0])
    assert torch.allclose(unet(x, t).sample, unet_forward(unet, x, t), atol=1e-5)
    sg = SemanticGuidedNetwork(unet, sff=True)
    hint = HintEncoder(sg)(torch.randn(2, 3, 64, 64))
    assert hint.shape == (2, widths[0], 8, 8) and hint.abs().max() == 0  # zero conv_out
    assert torch.allclose(GuidedDenoiser(unet, sg)(x, t, hint), unet(x, t).sample, atol=1e-5)
    assert len(sg.sff) == layers + 1 and all(len(row) == layers + 1 for row in sg.sff)


def test_sff_learns_where_the_reference_stays_zero():
    """With zero-initialised SFF convolutions (the reference) no gradient reaches SFF or the previous
    level's zero convolutions; with edgead's initialisation both receive one after the first update."""
    from edgead.methods.diad.networks import (
        GuidedDenoiser,
        SemanticGuidedNetwork,
        zero_module,
    )

    def grads_after_two_steps(zero_sff: bool):
        torch.manual_seed(0)
        unet = _unet((16, 32), 1)
        sg = SemanticGuidedNetwork(unet, sff=True)
        if zero_sff:
            for row in sg.sff:
                for seq in row:
                    zero_module(seq[0])
        opt = torch.optim.SGD(sg.parameters(), lr=0.5)
        x, t, img = torch.randn(4, 4, 8, 8), torch.tensor([10.0, 200.0, 500.0, 900.0]), torch.randn(4, 3, 64, 64)
        for _ in range(2):
            loss = (GuidedDenoiser(unet, sg)(x, t, sg.hint(img)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        prev = sg.zero_convs[-2 * sg.group].weight.grad.abs().sum()
        sff = sum(seq[0].weight.grad.abs().sum() for row in sg.sff for seq in row)
        return float(prev), float(sff)

    assert grads_after_two_steps(zero_sff=True) == (0.0, 0.0)
    prev, sff = grads_after_two_steps(zero_sff=False)
    assert prev > 0 and sff > 0


def test_ddim_discretisation_is_ldm_uniform():
    from edgead.core.schedulers.guided_ddim import GuidedDDIMScheduler

    sch = GuidedDDIMScheduler.from_schedule(
        1000, 0.00085, 0.012, "scaled_linear", guidance_w=0.0, offset=1, start_offset=-1
    )
    assert sch.timesteps(np.array([1000]))[:, 0].tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    y, noise = np.ones((1, 4, 2, 2)), np.zeros((1, 4, 2, 2))
    np.testing.assert_allclose(sch.start(y, np.array([1000]), noise), np.sqrt(sch.alpha_bar(np.array([999]))[0]))


def test_one_model_for_several_products(method_bundle, demo_data):
    from edgead import Detector, load_bundle

    root, parity = method_bundle("diad")
    m = load_bundle(root).manifest
    assert m.method == "diad" and m.params.sg and m.params.sff and m.params.start_step in (40, 80)
    assert parity["passed"] and m.scoring.image_score == "pooled_max" and m.scoring.pool == 8
    (name,) = m.products  # the fixture trains on one product; several are tested through the CLI below
    with Detector.load(root, backend="onnxruntime-cpu", product=name) as det:
        r = det.predict(next((demo_data / "test" / "hole").iterdir()))
    assert np.isfinite(r.score) and {"encoder", "hint_encoder", "denoiser_step", "decoder"} <= set(r.latency_ms)
    with pytest.raises(BundleError, match="unknown product 'bolt'; this bundle knows: data"):
        Detector.load(root, backend="onnxruntime-cpu", product="bolt")


def edgead(*args):
    return edgead_cli(*args)


@pytest.mark.slow
def test_multi_product_cli(tmp_path):
    from edgead.data.demo import make_demo_dataset

    a = make_demo_dataset(tmp_path / "weave", size=64, n_train=12, n_val=4, n_test_good=3, n_per_defect=2, seed=1)
    b = make_demo_dataset(tmp_path / "cloth", size=64, n_train=12, n_val=4, n_test_good=3, n_per_defect=2, seed=2)
    run = tmp_path / "run"
    r = edgead(
        "train",
        "--method",
        "diad",
        "--data",
        a,
        "--data",
        b,
        "--out",
        run,
        "--preset",
        "tiny",
        "--image-size",
        "64",
        "--steps",
        "4",
        "--device",
        "cpu",
        "--set",
        "train.batch_size=4",
        "--set",
        "diad.start_candidates=[40]",
        "--set",
        "d3ad.knn_k=3",
        "--set",
        "data.balance_products=true",
    )
    assert r.returncode == 0, r.stderr
    select = yaml.safe_load((run / "config.yaml").read_text())["stages"]["select"]
    assert select["start_step"] == 40 and len(select["candidates"]) == 2 and select["seconds"] > 0
    assert "selection has only 8 held-out good images (10 or more recommended)" in r.stderr  # 4 per product
    r = edgead("export", run, "--out", tmp_path / "b.edgead", "--parity-images", "2")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["image_threshold"]) == {"weave", "cloth"}
    image = a / "test" / "good" / "000.png"
    r = edgead("predict", "--bundle", tmp_path / "b.edgead", image)
    assert r.returncode == 1 and "serves several products (weave, cloth)" in r.stderr
    assert edgead("predict", "--bundle", tmp_path / "b.edgead", image, "--product", "weave").returncode == 0
    r = edgead("evaluate", tmp_path / "b.edgead", "--data", a, "--data", b, "--out", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["products"]) == {"weave", "cloth"}
    mean = np.mean([report["products"][p]["image"]["auroc"] for p in ("weave", "cloth")])
    assert report["mean"]["image"]["auroc"] == pytest.approx(mean)
    assert report["mean"]["at_calibrated_threshold"]["threshold"] is None  # per product; no mean threshold
    assert "NaN" not in (tmp_path / "r.json").read_text() and "at each product's threshold" in r.stdout
    # the ablation without the SG network: the plain latent UNet, exported from the same run
    r = edgead("export", run, "--out", tmp_path / "nosg.edgead", "--parity-images", "2", "--set", "diad.sg=false")
    assert r.returncode == 0, r.stderr
    r = edgead("train", "--method", "d3ad", "--data", a, "--data", b, "--out", tmp_path / "x")
    assert r.returncode == 2 and "trains one model per product" in r.stderr


def test_every_product_is_drawn_equally_often_however_many_images_it_has():
    from edgead.training.data import DeviceImages

    images = np.zeros((100, 4, 4, 3), np.uint8)
    g = torch.Generator().manual_seed(0)
    balanced = DeviceImages(images, torch.device("cpu"), products=[90, 10]).indices(4000, g)
    plain = DeviceImages(images, torch.device("cpu")).indices(4000, g)
    assert 0.45 < (balanced >= 90).float().mean() < 0.55 and 0.07 < (plain >= 90).float().mean() < 0.13
    assert set(balanced[balanced >= 90].tolist()) == set(range(90, 100))  # every image of the small product
    assert len(set(balanced[balanced < 90].tolist())) > 80 and balanced.min() >= 0
    with pytest.raises(ValueError, match="do not split 100 images"):
        DeviceImages(images, torch.device("cpu"), products=[90, 5])


def test_a_product_the_shared_autoencoder_cannot_reproduce_is_named():
    from edgead.core.preprocess import Preprocess
    from edgead.training.latent.autoencoder import (
        reconstruction_error,
        reconstruction_gap,
    )

    class Shift(torch.nn.Module):
        def forward(self, x):
            return x + 0.2  # 0.1 in [0, 1] units

    images = np.full((3, 8, 8, 3), 128, np.uint8)
    err = reconstruction_error(torch.nn.Identity(), Shift(), images, Preprocess.for_size(8), batch=2)
    assert err == pytest.approx(0.1, abs=1e-6)
    assert reconstruction_gap({"tire": 0.066, "grid": 0.1}) is None
    warning = reconstruction_gap({"tire": 0.066, "grid": 0.284, "hazelnut_toy": 0.382})
    assert "reproduces hazelnut_toy 5.8x worse than tire" in warning and "one model per product" in warning


def test_selection_under_a_budget_scores_the_latest_snapshot_first_and_stops_before_the_deadline(monkeypatch):
    """A candidate costs ~0.05 s here; with 0.08 s left after the first, no second one is started."""
    import time

    from edgead.methods.diad import select

    def fake_maps(x, *args, deadline=None, **kwargs):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        time.sleep(0.05)
        return np.random.default_rng(0).random((len(x), 8, 8)).astype(np.float32)

    monkeypatch.setattr(select, "diad_maps", fake_maps)
    args = (torch.zeros(4, 3, 8, 8), np.array([0, 0, 1, 1]), None, {10: None, 20: None}, None, None, None, None, 0.0, 1)
    everything = select.score_candidates({10: None, 20: None}, [600, 800], *args)
    assert [(r["snapshot"], r["start_step"]) for r in everything] == [(20, 600), (20, 800), (10, 600), (10, 800)]
    cut = select.score_candidates({10: None, 20: None}, [600, 800], *args, deadline=time.perf_counter() + 0.08)
    assert [(r["snapshot"], r["start_step"]) for r in cut] == [(20, 600)]
    assert select.score_candidates({10: None, 20: None}, [600, 800], *args, deadline=time.perf_counter() - 1) == []


def test_selection_maps_give_up_once_the_batches_done_say_the_rest_would_overrun():
    import time

    from edgead.methods.diad.select import diad_maps

    class SlowScheduler:  # 0.05 s a batch of 8
        def reconstruct(self, denoise, z0, t_max, noise):
            time.sleep(0.05)
            return z0

    def same(x):
        return x

    images = torch.rand(24, 3, 8, 8)
    args = (same, same, None, same, lambda x: [x], SlowScheduler(), 600, torch.zeros(1, 3, 8, 8))
    assert diad_maps(images, *args).shape == (24, 8, 8)
    assert diad_maps(images, *args, deadline=time.perf_counter() + 0.07) is None  # 3 batches of 0.05 s do not fit
