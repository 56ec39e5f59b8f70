"""D3AD: the sampler against the authors' update, the prior's step mapping, the map arithmetic against
PyTorch, staged training, the ablation switches and the load-time checks."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgead.core.errors import BundleError, DataError
from edgead.core.knn import KnnPrior, adaptive_avg_pool, roundup
from edgead.core.maps import cosine_distance, upsample
from edgead.core.schedulers.guided_ddim import GuidedDDIMScheduler

from .conftest import edgead_cli


def reference_steps(y, x, seq, model, betas, eta2):
    """The authors' my_generalized_steps (eta = 0), verbatim arithmetic (Dynamic-noise-AD/sample.py)."""
    b = torch.cat([torch.zeros(1, dtype=betas.dtype), betas])
    alpha = (1 - b).cumprod(0)
    xs = [x]
    m = len(seq[0])
    for idx in reversed(range(m)):
        t = torch.tensor([s[idx] for s in seq])
        next_t = torch.full((x.size(0),), -1) if idx == 0 else torch.tensor([s[idx - 1] for s in seq])
        at = alpha.index_select(0, t + 1).view(-1, 1, 1, 1)
        at_next = alpha.index_select(0, next_t + 1).view(-1, 1, 1, 1)
        xt = xs[-1]
        et = model(xt, t)
        yt = at.sqrt() * y + (1 - at).sqrt() * et
        et_hat = et - (1 - at).sqrt() * eta2 * (yt - xt)
        x0_t = (xt - et_hat * (1 - at).sqrt()) / at.sqrt()
        xs.append(at_next.sqrt() * x0_t + ((1 - at_next) - 0.0) ** 0.5 * et_hat)
    return xs[-1]


def fake_eps(x, t):
    tt = torch.as_tensor(np.asarray(t), dtype=x.dtype).view(-1, 1, 1, 1)
    return 0.3 * x + 0.01 * torch.sin(tt / 7.0)


def test_sampler_is_the_reference_update_with_per_sample_start_steps():
    betas = torch.linspace(0.0015, 0.0195, 1000, dtype=torch.float64)
    sch = GuidedDDIMScheduler.from_schedule(1000, 0.0015, 0.0195, "linear", guidance_w=4.0)
    y = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t_max = np.array([20, 80])
    ours = sch.reconstruct(fake_eps, y, t_max)
    for i, tm in enumerate(t_max):  # the reference runs one start step per batch
        skip = max(tm // 10, 1)
        seq = [torch.arange(0, tm, skip)]
        at = torch.cat([torch.ones(1, dtype=betas.dtype), (1 - betas).cumprod(0)])[tm + 1]
        ref = reference_steps(y[i : i + 1], at.sqrt() * y[i : i + 1], seq, fake_eps, betas, 4.0)
        assert torch.allclose(ours[i : i + 1], ref, atol=1e-5), (tm, (ours[i : i + 1] - ref).abs().max())
    # numpy (runtime) and torch (training) run the same code
    np_out = sch.reconstruct(lambda x, t: fake_eps(torch.from_numpy(x), t).numpy(), y.numpy(), t_max)
    np.testing.assert_allclose(np_out, ours.numpy(), atol=1e-9)
    assert sch.timesteps(np.array([20]))[:, 0].tolist() == [18, 16, 14, 12, 10, 8, 6, 4, 2, 0]


def test_start_step_mapping_is_the_references():
    assert [roundup(x) for x in (16, 24, 32, 40, 48, 56, 64, 72, 80, 15, 25)] == [
        20,
        20,
        30,
        40,
        50,
        60,
        60,
        70,
        80,
        20,
        30,
    ]
    edges = np.linspace(0.0, 10.0, 11)
    prior = KnnPrior(np.zeros((5, 3), np.float32), edges, k=2, max_t=80)
    d = np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 5.0, 9.99, 10.0, 50.0])
    assert prior.bin_of(d).tolist() == [0, 0, 1, 1, 2, 5, 10, 10, 10]
    assert prior.t_max(d).tolist() == [20, 20, 20, 20, 20, 40, 80, 80, 80]


def test_knn_prior_distances_are_mean_l1_of_the_k_nearest():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(30, 6)).astype(np.float32)
    q = rng.normal(size=(3, 6)).astype(np.float32)
    d = KnnPrior(bank, np.linspace(0, 1, 11), k=4, max_t=80).distances(q)
    ref = np.sort(np.abs(q[:, None] - bank[None]).sum(-1), axis=1)[:, :4].mean(1)
    np.testing.assert_allclose(d, ref, rtol=1e-6)


@pytest.mark.parametrize("h, w, size", [(32, 32, 16), (32, 33, 16), (28, 29, 16), (8, 9, 16), (7, 8, 3)])
def test_adaptive_pool_matches_pytorch(h, w, size):
    x = np.random.default_rng(h).normal(size=(2, 3, h, w)).astype(np.float32)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(x), size).numpy()
    np.testing.assert_allclose(adaptive_avg_pool(x, size), ref, atol=1e-6)


def test_map_arithmetic_matches_pytorch():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(2, 8, 8)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(m)[:, None], size=(64, 48), mode="bilinear", align_corners=True)[:, 0]
    np.testing.assert_allclose(upsample(m, (64, 48)), ref.numpy(), atol=1e-5)
    a, b = rng.normal(size=(2, 2, 40, 4, 4)).astype(np.float32)
    ref = 1 - F.cosine_similarity(torch.from_numpy(a), torch.from_numpy(b), dim=1)
    np.testing.assert_allclose(cosine_distance(a, b), ref.numpy(), atol=1e-6)


def test_prior_needs_enough_training_images():
    from edgead.core.preprocess import Preprocess
    from edgead.methods.d3ad.prior import fit_prior
    from edgead.training.data import DeviceImages

    data = DeviceImages(np.zeros((5, 64, 64, 3), np.uint8), torch.device("cpu"))
    with pytest.raises(DataError, match="needs at least 21 training images for k = 20 neighbours"):
        fit_prior(torch.nn.Identity(), data, Preprocess.for_size(64), k=20, bins=10, pool=4)


def edgead(*args):
    return edgead_cli(*args)


@pytest.mark.slow
def test_stages_run_alone_and_resume(demo_data, tmp_path):
    run = tmp_path / "run"
    base = [
        "train",
        "--method",
        "d3ad",
        "--data",
        demo_data,
        "--out",
        run,
        "--image-size",
        "64",
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--set",
        "d3ad.knn_k=5",
        "--set",
        "train.batch_size=4",
        "--steps",
        "5",
    ]
    r = edgead(*base, "--stage", "autoencoder")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stages"]["autoencoder"]["complete"]
    r = edgead("export", run, "--out", tmp_path / "b.edgead")
    assert r.returncode == 1 and "stage denoiser is missing or unfinished" in r.stderr
    r = edgead("train", "--out", run, "--stage", "adapt")
    assert r.returncode == 1 and "stage adapt needs the stages denoiser first" in r.stderr
    r = edgead("train", "--out", run, "--stage", "denoiser", "--steps", "5")
    assert r.returncode == 0, r.stderr
    r = edgead("train", "--out", run, "--resume")  # the remaining stages, with the run's configuration
    assert r.returncode == 0, r.stderr
    stages = json.loads(r.stdout)["stages"]
    assert all(stages[s]["complete"] for s in ("autoencoder", "denoiser", "adapt", "prior"))


@pytest.mark.parametrize(
    "setting, check",
    [
        ("d3ad.dynamic=false", lambda p, extras: not p.dynamic),
        ("d3ad.start=noised", lambda p, extras: p.start == "noised" and "noise" in extras),
    ],
)
def test_ablation_settings_at_export(method_bundle, tmp_path, setting, check):
    from edgead import Detector, load_bundle
    from edgead.export.flow import export_run

    root, _ = method_bundle("d3ad")
    run = root.parent / "run"
    bundle, parity = export_run(run, tmp_path / "x.edgead", parity_images=2, progress=False, overrides=[setting])
    b = load_bundle(bundle.root)
    assert check(b.manifest.params, {e.name for e in b.manifest.extras}) and parity["passed"]
    with Detector.load(b.root, backend="onnxruntime-cpu") as det:
        out = det.score_batch([np.full((64, 64, 3), 120, np.uint8)] * 2)
    if setting.startswith("d3ad.dynamic"):
        assert out.components["t_max"].tolist() == [80, 80]
    with pytest.raises(Exception, match="only d3ad.\\* and calibration.\\* can change at export"):
        export_run(run, tmp_path / "y.edgead", overrides=["model.preset=s"], progress=False)


def test_bundle_with_mismatching_prior_is_refused(method_bundle, tmp_path):
    from edgead import Detector, load_bundle

    from .test_bundle import _read, _rewrite

    root, _ = method_bundle("d3ad")
    copy = tmp_path / "b.edgead"
    shutil.copytree(root, copy)
    data = _read(copy)
    data["params"]["bins"] = 7
    _rewrite(copy, data)
    with pytest.raises(BundleError, match="11 bin edges, the manifest declares 7 bins"):
        Detector(load_bundle(copy), backend="onnxruntime-cpu")
