import json

import numpy as np
import pytest
import torch

from edgead.core.knn import NearestNeighbourScorer, fit_cells, search_cells


def test_knn_against_brute_force():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 7)).astype(np.float32)
    feats = rng.normal(size=(2, 7, 3, 4)).astype(np.float32)
    got = NearestNeighbourScorer(bank, chunk=5, block=7).distances(feats)  # blocks of both that do not divide
    q = feats.transpose(0, 2, 3, 1).reshape(-1, 7)
    ref = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1)).min(1).reshape(2, 3, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # a bank entry is its own neighbour (float32 expansion |a|^2 - 2ab + |b|^2 limits precision)
    assert NearestNeighbourScorer(bank).distances(bank.T.reshape(1, 7, 50, 1)).max() < 5e-3
    with pytest.raises(ValueError, match="features have 3 channels, the memory bank 7"):
        NearestNeighbourScorer(bank).distances(np.zeros((1, 3, 2, 2), np.float32))


def _clustered(n_clusters=40, per=60, channels=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_clusters, channels))
    bank = (centres[:, None] + rng.normal(size=(n_clusters, per, channels))).reshape(-1, channels)
    queries = centres[rng.integers(0, n_clusters, 300)] + rng.normal(size=(300, channels))
    return bank.astype(np.float32), queries.T.reshape(1, channels, 300, 1).astype(np.float32)


def test_the_search_through_cells_finds_the_exact_neighbour_almost_always_and_never_a_nearer_one():
    bank, feats = _clustered()
    exact = NearestNeighbourScorer(bank).distances(feats)
    cells = fit_cells(bank, 40)
    every = NearestNeighbourScorer(bank, cells=cells, probes=40).distances(feats)  # every cell: the exact search
    np.testing.assert_allclose(every, exact, rtol=1e-5, atol=1e-4)
    probed = NearestNeighbourScorer(bank, cells=cells, probes=4).distances(feats)
    assert np.all(probed >= exact - 1e-4)
    assert np.mean(np.isclose(probed, exact, rtol=1e-5, atol=1e-4)) >= 0.98
    one = NearestNeighbourScorer(bank, cells=cells, probes=1).distances(feats)
    assert np.all(one >= probed - 1e-4) and np.any(one > probed + 1e-3)  # fewer probes miss more
    with pytest.raises(ValueError, match="probes must be in 1..40"):
        NearestNeighbourScorer(bank, cells=cells, probes=41)


def test_rows_left_out_are_not_found_through_cells_either():
    bank, feats = _clustered(n_clusters=8, per=20, channels=4)
    out = np.zeros(len(bank), bool)
    out[::3] = True
    scorer = NearestNeighbourScorer(bank, cells=fit_cells(bank, 8), probes=8)
    scorer.exclude = out
    np.testing.assert_allclose(
        scorer.distances(feats), NearestNeighbourScorer(bank[~out]).distances(feats), rtol=1e-5, atol=1e-4
    )
    scorer = NearestNeighbourScorer(bank, cells=fit_cells(bank, 8), probes=1)
    scorer.exclude = np.ones(len(bank), bool)
    scorer.exclude[0] = False  # the probed cells are empty for most patches: the whole bank is searched
    np.testing.assert_allclose(
        scorer.distances(feats), NearestNeighbourScorer(bank[:1]).distances(feats), rtol=1e-5, atol=1e-4
    )


def test_only_a_large_bank_gets_cells():
    bank, _ = _clustered(n_clusters=10, per=100)
    assert search_cells("bank", bank, exact_below=1001, probes=8) == ({}, 0)
    assert search_cells("bank", bank, exact_below=1000, probes=0) == ({}, 0)
    cells, probes = search_cells("bank", bank, exact_below=1000, probes=8)
    assert probes == 8 and cells["bank_centroids"].shape == (16, 16) and cells["bank_cells"].shape == (1000,)


def test_greedy_coreset_covers_clusters():
    from edgead.training.patch_bank import greedy_coreset

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centres])
    idx = greedy_coreset(x, 3)
    assert len(set(idx.tolist())) == 3
    assert sorted(int(i) // 100 for i in idx) == [0, 1, 2]  # one point per cluster


def _one_at_a_time(x: torch.Tensor, n: int) -> list[int]:
    """The textbook greedy k-center selection: one centre, one pass over every point."""
    g = torch.Generator().manual_seed(0)
    chosen = [int(torch.randint(x.shape[0], (1,), generator=g))]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        chosen.append(int(torch.argmax(dist)))
        dist = torch.minimum(dist, ((x - x[chosen[-1]]) ** 2).sum(1))
    return chosen


@pytest.mark.parametrize("n, batch, pool", [(300, 128, 8), (300, 7, 2), (1999, 64, 4)])
def test_the_batched_coreset_is_the_greedy_one(n, batch, pool):
    """Rounds of one matrix product pick exactly the centres of the one-at-a-time greedy selection."""
    from edgead.training.patch_bank import greedy_coreset

    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(3))
    x[:1000] *= 0.2  # a dense and a sparse region
    got = greedy_coreset(x, n, projection_dim=16, batch=batch, pool=pool)
    assert sorted(got.tolist()) == sorted(_one_at_a_time(x, n)) and len(set(got.tolist())) == n


def test_patch_descriptors_average_after_upsampling():
    """upsample_first: every scale averaged over the same 3x3 window of the finest grid; pool_first (runs trained
    before 0.9) averages a coarse map at its own stride first."""
    import torch.nn.functional as F

    from edgead.training.backbone import aggregate_patches

    fine, coarse = torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4)
    up = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    want = F.avg_pool2d(torch.cat([fine, up], 1), 3, 1, 1, count_include_pad=False)
    assert torch.allclose(aggregate_patches([fine, coarse]), want)
    old = aggregate_patches([fine, coarse], aggregation="pool_first")
    assert torch.allclose(old[:, :2], want[:, :2]) and not torch.allclose(old[:, 2:], want[:, 2:])


def test_runs_trained_before_the_change_keep_their_patch_descriptors():
    from edgead.core.codec import from_dict
    from edgead.core.config import ExperimentConfig
    from edgead.training.checkpoint import migrate_config

    old = {"method": "d3ad", "patchcore": {"coreset_fraction": 0.01}, "d3ad": {"knn": {"weight": None}}}
    cfg = from_dict(ExperimentConfig, migrate_config(old))
    assert cfg.patchcore.aggregation == "pool_first" and cfg.d3ad.knn.aggregation == "pool_first"
    assert cfg.patchcore.coreset_fraction == 0.01  # as trained
    new = ExperimentConfig()
    assert new.patchcore.aggregation == new.d3ad.knn.aggregation == "upsample_first"
    assert new.patchcore.coreset_fraction == new.d3ad.knn.coreset_fraction == 0.1


def test_a_coreset_cut_by_the_budget_still_holds_every_patch_it_should():
    """Past the deadline the rest of the bank is a random sample: distinct patches, as many as asked."""
    import time

    from edgead.training.patch_bank import greedy_coreset

    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    idx = greedy_coreset(x, 40, deadline=time.perf_counter() - 1.0)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40 and int(idx.max()) < 500
    assert torch.equal(idx, greedy_coreset(x, 40, deadline=time.perf_counter() - 1.0))  # seeded


def test_backbone_features_have_documented_strides():
    from edgead.training.backbone import FEATURE_CHANNELS, load_backbone

    feats = load_backbone()(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // s, 64 // s) for c, s in zip(FEATURE_CHANNELS, (4, 8, 16))]


def test_patchcore_fit_export_predict(demo_data, tmp_path):
    from edgead import Detector, load_bundle
    from edgead.core.config import load_config
    from edgead.export.flow import export_run
    from edgead.training import train

    cfg = load_config(
        None, ["method=patchcore", f"data.path={demo_data}", "data.image_size=64", "patchcore.coreset_fraction=0.05"]
    )
    summary = train(cfg, tmp_path / "pc", progress=False)
    assert summary["memory_bank"] == [round(16 * 64 * 0.05), 152]
    bundle, parity = export_run(tmp_path / "pc", tmp_path / "pc.edgead", parity_images=None, progress=False)
    assert parity["decision_mismatches"] == []
    features = {o["stage"]: o for o in parity["outputs"]}["feature_extractor"]
    assert features["finite"] and features["max_abs"] < 1e-3
    m = load_bundle(bundle.root).manifest
    assert m.scoring.image_score == "max" and m.scoring.smoothing_sigma == 4.0 and m.params.feature_stride == 8
    with Detector.load(bundle.root, backend="onnxruntime-cpu") as det:
        hole = det.predict(next((demo_data / "test" / "hole").iterdir()))
        good = det.predict(next((demo_data / "test" / "good").iterdir()))
    assert hole.score > good.score
    assert m.params.knn_probes == 0 and "memory_bank_cells" not in {e.name for e in m.extras}  # a small bank: exact
    # a bank searched through cells: every distance at least the exact one, the same verdicts on the test images
    cells, _ = export_run(
        tmp_path / "pc",
        tmp_path / "cells.edgead",
        parity_images=None,
        progress=False,
        overrides=["patchcore.exact_below=1", "patchcore.probes=2"],
    )
    assert cells.manifest.params.knn_probes == 2
    assert {"memory_bank_centroids", "memory_bank_cells"} <= {e.name for e in cells.manifest.extras}
    images = sorted((demo_data / "test").glob("*/*.png"))
    with Detector.load(bundle.root) as exact, Detector.load(cells.root) as probed:
        a, b = (np.array([d.predict(f).score for f in images]) for d in (exact, probed))
    assert np.all(b >= a - 1e-4) and np.corrcoef(a, b)[0, 1] > 0.95


def test_rows_left_out_of_the_bank_are_not_found():
    bank = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], np.float32)
    scorer = NearestNeighbourScorer(bank)
    q = np.zeros((1, 2, 1, 1), np.float32)  # row 0 itself
    assert scorer.distances(q)[0, 0, 0] == pytest.approx(0.0, abs=1e-3)
    scorer.exclude = np.array([True, False, False])
    assert scorer.distances(q)[0, 0, 0] == pytest.approx(5.0, abs=1e-3)


def test_the_default_threshold_rests_on_training_images_left_out_of_the_bank(demo_data, tmp_path):
    """Export scores every training image against the bank without the rows it gave (as if unseen): never lower
    than against the whole bank, and the threshold rests on them and the held-out images, not the 6 held out
    alone (whose tolerance limit passed every defect of hazelnut_toy)."""
    from edgead import Detector
    from edgead.core.config import load_config
    from edgead.data.io import read_image
    from edgead.export.flow import export_run, method_export
    from edgead.training import train

    cfg = load_config(None, ["method=patchcore", f"data.path={demo_data}", "data.image_size=64"])
    train(cfg, tmp_path / "pc", progress=False)
    crossed, _ = export_run(tmp_path / "pc", tmp_path / "crossed.edgead", parity_images=None, progress=False)
    plain, _ = export_run(
        tmp_path / "pc",
        tmp_path / "plain.edgead",
        parity_images=None,
        progress=False,
        overrides=["calibration.cross_fit=false"],
    )
    cal, held_out = crossed.manifest.calibration, plain.manifest.calibration
    assert held_out.n_images == 6 and cal.n_images == 6 + 16
    assert "16 training images, each left out of the memory bank" in cal.source
    assert cal.image.threshold < held_out.image.threshold
    more = method_export(tmp_path / "pc").more_good_scores(crossed, demo_data)
    with Detector(crossed, backend="onnxruntime-cpu", require_calibration=False) as det:
        names = json.loads((tmp_path / "pc" / "memory_bank_images.json").read_text())
        whole = np.array([det.score_batch([read_image(demo_data / n)]).scores[0] for n in names])
    assert np.all(more.scores >= whole - 1e-4) and np.any(more.scores > whole + 1e-3)
