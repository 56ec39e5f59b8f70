"""The latent methods' patch kNN map, its fusion with the reconstruction map, the weight chosen on
synthetic anomalies, and the autoencoder whose encoder starts from ImageNet weights."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from edgead.core.errors import BundleError, ConfigError
from edgead.core.fusion import FusionParams, fuse
from edgead.core.scoring import smooth


def test_fuse_standardises_each_map_with_its_good_image_statistics():
    rec = np.array([[[1.0, 3.0]]], np.float32)
    knn = np.array([[[10.0, 20.0]]], np.float32)
    params = FusionParams(0.25, [1.0, 2.0], [10.0, 5.0])
    expected = 0.75 * (rec - 1.0) / 2.0 + 0.25 * (knn - 10.0) / 5.0
    np.testing.assert_allclose(fuse(rec, knn, params), expected, rtol=1e-6)
    np.testing.assert_allclose(fuse(rec, knn, FusionParams(0.0, [1.0, 2.0], [10.0, 5.0])), [[[0.0, 1.0]]])
    np.testing.assert_allclose(fuse(rec, knn, FusionParams(1.0, [1.0, 2.0], [10.0, 5.0])), [[[0.0, 2.0]]])


def _maps(rng, n, size=32, blob=None):
    m = rng.normal(0.0, 1.0, (n, size, size)).astype(np.float32)
    if blob is not None:
        m = m + 6.0 * blob
    return m


@pytest.mark.parametrize("informative, expected", [("knn", 0.75), ("reconstruction", 0.0)])
def test_weight_goes_to_the_map_that_finds_the_synthetic_anomalies(informative, expected):
    from edgead.core.manifest import Scoring
    from edgead.export.fusion_weight import choose_weight

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), bool)
    for i in range(6):
        y, x = rng.integers(4, 24, 2)
        masks[i, y : y + 6, x : x + 6] = True
    good = (_maps(rng, 6), _maps(rng, 6))
    found = _maps(rng, 6, blob=masks.astype(np.float32))
    bad = (found, _maps(rng, 6)) if informative == "reconstruction" else (_maps(rng, 6), found)
    stats = FusionParams(0.0, [0.0, 1.0], [0.0, 1.0])
    weight, rows = choose_weight(good, bad, masks, stats, (0.0, 0.25, 0.5, 0.75), Scoring("max", 1.0))
    assert weight == expected
    assert [r["knn_weight"] for r in rows] == [0.0, 0.25, 0.5, 0.75]
    assert max(r["separation"] for r in rows) == next(r["separation"] for r in rows if r["knn_weight"] == weight)
    assert all(0.5 <= r["image_auroc"] <= 1 and 0 <= r["pixel_aupro"] <= 1 for r in rows)


def test_patch_output_is_the_baselines_descriptor():
    """D3AD's and DiAD's kNN maps use exactly the PatchCore baseline's patch descriptor."""
    from edgead.methods.patchcore.train import PatchFeatures
    from edgead.training.backbone import PATCH_LAYERS, FeatureStages, load_backbone

    backbone = load_backbone()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    stages = FeatureStages(backbone, (0, 1, 2), PATCH_LAYERS)
    out = stages(x)
    assert stages.names == ["features4", "features8", "features16", "patches"]
    assert torch.equal(out[-1], PatchFeatures(backbone, PATCH_LAYERS, 3)(x))
    assert out[-1].shape == (2, 40 + 112, 8, 8)


@pytest.mark.parametrize("method", ["d3ad", "diad"])
def test_exported_map_is_the_fused_map_and_the_weight_is_recorded(method_bundle, method):
    from edgead import Detector, load_bundle

    root, parity = method_bundle(method)
    b = load_bundle(root)
    fusion = b.manifest.params.fusion
    report = b.manifest.provenance["export"]["fusion"]
    assert report["chosen_by"] == "synthetic anomalies" and report["synthetic_images"] >= 48
    assert len(report["candidates"]) == 16 and report["candidates"][-1]["knn_weight"] == 0.75
    best = max(report["candidates"], key=lambda r: (r["separation"], -r["knn_weight"]))
    assert fusion.knn_weight == best["knn_weight"] == report["knn_weight"]
    assert fusion.reconstruction[1] > 0 and fusion.knn[1] > 0
    assert "patch_bank" in {e.name for e in b.manifest.extras} and parity["passed"]
    frame = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    product = next(iter(b.manifest.products), None)
    with Detector.load(root, backend="onnxruntime-cpu", product=product) as det:
        out = det.score_batch([frame])
    parts = out.components
    expected = smooth(fuse(parts["reconstruction_map"], parts["knn_map"], fusion), b.manifest.scoring.smoothing_sigma)
    np.testing.assert_allclose(out.maps, expected, rtol=1e-5, atol=1e-5)
    assert parts["knn_map"].min() >= 0


def test_fixed_weight_at_export_and_its_checks(method_bundle, tmp_path):
    from edgead import Detector, load_bundle
    from edgead.export.flow import export_run

    from .test_bundle import _read, _rewrite

    root, _ = method_bundle("d3ad")
    bundle, _ = export_run(
        root.parent / "run", tmp_path / "knn.edgead", parity_images=2, progress=False, overrides=["d3ad.knn.weight=1"]
    )
    b = load_bundle(bundle.root)
    assert b.manifest.params.fusion.knn_weight == 1.0
    assert b.manifest.provenance["export"]["fusion"]["chosen_by"] == "configuration"
    with Detector.load(b.root, backend="onnxruntime-cpu") as det:  # weight 1: the kNN map alone
        out = det.score_batch([np.full((64, 64, 3), 90, np.uint8)])
    (mk, sk) = b.manifest.params.fusion.knn
    np.testing.assert_allclose(out.maps, smooth((out.components["knn_map"] - mk) / sk, 4.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"d3ad.knn.weight and d3ad.knn.candidates must lie in \[0, 1\]"):
        export_run(root.parent / "run", tmp_path / "bad.edgead", progress=False, overrides=["d3ad.knn.weight=1.5"])
    for edit, message in [
        (lambda p: p["fusion"].update(knn_weight=float("nan")), "params.fusion.knn_weight must be a finite number"),
        (lambda p: p["fusion"].update(knn=[0.0, 0.0]), "params.fusion must hold a knn_weight in"),
    ]:
        copy = tmp_path / "edited.edgead"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(b.root, copy)
        data = _read(copy)
        edit(data["params"])
        _rewrite(copy, data)
        with pytest.raises(BundleError, match=message):
            Detector(load_bundle(copy), backend="onnxruntime-cpu")


def test_pretrained_encoder_stays_frozen_while_the_autoencoder_trains(method_bundle):
    """The default encoder (efficientnet-lite0): the ImageNet part (weights and BatchNorm statistics) is what the
    package ships after training; the head and the decoder learn; the run records its network; it exports."""
    import yaml
    from safetensors.torch import load_file

    from edgead.core.config import load_config
    from edgead.training.backbone import load_backbone

    bundle, parity = method_bundle("d3ad")
    run = bundle.parent / "run"
    state = load_file(str(run / "autoencoder.safetensors"))
    imagenet = load_backbone(depth=2).state_dict()
    for key, value in imagenet.items():
        assert torch.equal(state[f"encoder.backbone.{key}"], value), key
    assert any(k.startswith("encoder.head.") for k in state) and not any(k.startswith("encoder.conv_in") for k in state)
    assert "decoder.skip.weight" in state  # the colour path beside the decoder (the default)
    network = yaml.safe_load((run / "config.yaml").read_text())["network"]
    assert network["autoencoder_encoder"] == "efficientnet-lite0" and network["block_out_channels"] == [16, 32]
    assert network["autoencoder_decoder_stride"] == 2  # D3AD's default: the half-resolution decoder
    assert any(k.startswith("decoder.decoder.decoder.up_blocks.2.") for k in state)
    assert not any(k.startswith("decoder.decoder.decoder.up_blocks.3.") for k in state)
    diad, _ = method_bundle("diad")
    diad_network = yaml.safe_load((diad.parent / "run" / "config.yaml").read_text())["network"]
    assert diad_network["autoencoder_decoder_stride"] == 1
    assert parity["passed"]
    with pytest.raises(ConfigError, match="model.autoencoder_encoder must be one of 'scratch', 'efficientnet-lite0'"):
        load_config(None, ["method=d3ad", "model.autoencoder_encoder=resnet"])


def test_colour_path_carries_the_latents_low_frequencies_and_old_runs_keep_their_autoencoder():
    from edgead.training.checkpoint import migrate_config
    from edgead.training.latent.encoders import ColourSkipDecoder
    from edgead.training.latent.networks import PRESETS, build_autoencoder

    class Silent(torch.nn.Module):  # a decoder that says nothing: only the linear path is left
        def forward(self, z):
            return z.new_zeros(z.shape[0], 3, 8 * z.shape[2], 8 * z.shape[3])

    dec = ColourSkipDecoder(Silent(), 4, 8)
    with torch.no_grad():
        dec.skip.weight.copy_(torch.eye(3, 4)[:, :, None, None])
        dec.skip.bias.zero_()
        z = torch.zeros(1, 4, 2, 2)
        z[0, 0] = 0.5  # a flat red latent
        out = dec(z)
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[0, 0], torch.full((16, 16), 0.5)) and out[0, 1:].abs().max() == 0
    ae = build_autoencoder(replace(PRESETS["tiny"], autoencoder_encoder="scratch", autoencoder_colour_skip=False), 64)
    assert hasattr(ae.encoder, "conv_in") and not isinstance(ae.decoder, ColourSkipDecoder)
    assert ae.decode(ae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean).sample.shape == (1, 3, 64, 64)
    old = migrate_config({"method": "d3ad", "model": {"preset": "s"}})  # written by edgead 0.2
    assert old["model"]["autoencoder_encoder"] == "scratch" and old["model"]["autoencoder_colour_skip"] is False
    new = migrate_config({"method": "d3ad", "model": {"preset": "s", "autoencoder_encoder": "efficientnet-lite0"}})
    assert new["model"]["autoencoder_encoder"] == "efficientnet-lite0"
    assert old["model"]["autoencoder_decoder_stride"] == new["model"]["autoencoder_decoder_stride"] == 1


def test_half_resolution_decoder_drops_the_finest_level_and_keeps_the_image_size():
    from edgead.core.config import load_config
    from edgead.training.latent.encoders import ColourSkipDecoder, HalfResolutionDecoder
    from edgead.training.latent.networks import PRESETS, build_autoencoder

    full = build_autoencoder(PRESETS["s"], 64)
    half = build_autoencoder(replace(PRESETS["s"], autoencoder_decoder_stride=2), 64)
    assert isinstance(half.decoder, ColourSkipDecoder) and isinstance(half.decoder.decoder, HalfResolutionDecoder)
    assert len(half.decoder.decoder.decoder.up_blocks) == len(full.decoder.decoder.up_blocks) - 1 == 3
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        inner = half.decoder.decoder.decoder(half.post_quant_conv(z))
        out = half.decode(z).sample
    assert inner.shape == (2, 3, 32, 32) and out.shape == (2, 3, 64, 64)  # decoded at half size, then x2
    with pytest.raises(ConfigError, match="model.autoencoder_decoder_stride"):
        load_config(None, ["method=d3ad", "model.autoencoder_decoder_stride=4"])
