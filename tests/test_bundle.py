import shutil

import numpy as np
import pytest
import yaml

from edgead.core.bundle import BundleWriter, load_bundle
from edgead.core.errors import BundleError, ConfigError


def _copy(bundle, tmp_path):
    dst = tmp_path / "copy.edgead"
    shutil.copytree(bundle, dst)
    return dst


def _read(b):
    from edgead.core.bundle import INTEGRITY

    return yaml.safe_load((b / "manifest.yaml").read_text().rpartition(INTEGRITY)[0])


def _rewrite(b, data):
    """Write a manifest with a valid integrity line (as a tool that knows the format would)."""
    import hashlib

    from edgead.core.bundle import INTEGRITY

    body = yaml.safe_dump(data, sort_keys=False)
    (b / "manifest.yaml").write_text(body + INTEGRITY + hashlib.sha256(body.encode()).hexdigest() + "\n")


def test_bundle_contents_and_contract(tiny_bundle):
    b = load_bundle(tiny_bundle)
    m = b.manifest
    assert m.method == "diffusionad" and m.schema_version == 2
    assert [s.name for s in m.stages] == ["denoiser_step", "segmenter"]
    assert [s.batch_factor for s in m.stages] == [2, 1]  # [x_ts; x_tb] per frame
    assert m.params.t_s == 200 and 0 < m.params.alpha_bar_b < m.params.alpha_bar_s < 1
    assert m.scoring.image_score == "top_k_mean" and m.scoring.top_k == 50
    assert m.preprocess.interpolation == "area"
    den = m.stage("denoiser_step")
    assert [i.name for i in den.inputs] == ["x_t", "t"] and den.inputs[0].shape == ["batch", 3, 64, 64]
    assert den.opset >= 17
    assert b.extra("noise_s").shape == (1, 3, 64, 64)
    assert not np.array_equal(b.extra("noise_s"), b.extra("noise_b"))
    cal = m.calibration
    assert cal.n_images == 6 and cal.source == "validation/good"
    assert cal.image.min <= cal.image.mean <= cal.image.max
    assert m.provenance["dataset"]["fingerprint"]
    assert m.provenance["export"]["parity"]["decision_mismatches"] == []


def test_graph_metadata_names_the_stage(tiny_bundle):
    import onnx

    model = onnx.load(str(tiny_bundle / "graphs" / "segmenter.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["stage"] == "segmenter" and meta["method"] == "diffusionad"
    assert [i.name for i in model.graph.input] == ["image", "reconstruction"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_tampered_graph_is_detected(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    with open(b / "graphs" / "segmenter.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="sha256 of graphs/segmenter.onnx does not match"):
        load_bundle(b)


def test_missing_file_is_detected(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    (b / "extras" / "noise_b.npy").unlink()
    with pytest.raises(BundleError, match="extras/noise_b.npy is missing"):
        load_bundle(b)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(schema_version=99), "schema version 99 is not supported"),
        (lambda m: m.update(colour="blue"), "unknown key 'manifest.colour'"),
        (lambda m: m["preprocess"].update(channel_order="BGR"), "channel_order must be one of 'RGB'"),
        (lambda m: m.pop("params"), "needs a 'params' section"),
        (lambda m: m["params"].update(t_s="early"), "manifest.params.t_s must be an integer"),
        (
            lambda m: m.update(method="magic"),
            "unknown method 'magic'; registered methods: d3ad, diad, diffusionad, patchcore",
        ),
        (
            lambda m: m.update(stages=m["stages"][:1]),
            "has the stages denoiser_step, segmenter; this bundle lists denoiser_step",
        ),
        (lambda m: m.update(extras=[e for e in m["extras"] if e["name"] != "noise_s"]), "needs the extras noise_s"),
    ],
)
def test_strict_manifest(tiny_bundle, tmp_path, edit, message):
    b = _copy(tiny_bundle, tmp_path)
    data = _read(b)
    edit(data)
    _rewrite(b, data)
    with pytest.raises(BundleError, match=message):
        load_bundle(b)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.yaml is missing"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.yaml").write_text("{{{")
    with pytest.raises(BundleError, match="not valid YAML"):
        load_bundle(tmp_path / "bad")


def test_writer_never_overwrites_silently(tmp_path):
    out = tmp_path / "x.edgead"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="already exists; pass --overwrite"):
        BundleWriter(out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="is not an edgead bundle"):  # --overwrite replaces only a bundle
        BundleWriter(out, overwrite=True)
    (out / "manifest.yaml").write_text("a previous bundle\n")
    with BundleWriter(out, overwrite=True) as w:
        tmp = w.tmp
        assert tmp.exists()
    assert not tmp.exists() and (out / "keep.txt").exists()  # abandoned writer leaves nothing


def test_a_bundle_from_a_newer_edgead_says_which_edgead_reads_it(tiny_bundle, tmp_path):
    import hashlib
    import shutil

    import yaml

    from edgead.core.bundle import INTEGRITY
    from edgead.core.errors import BundleError

    b = tmp_path / "b.edgead"
    shutil.copytree(tiny_bundle, b)
    body = (b / "manifest.yaml").read_text().rpartition(INTEGRITY)[0]
    raw = yaml.safe_load(body)
    raw["edgead_version"], raw["calibration"]["drift_guard"] = "9.1.0", 0.5  # a field this edgead does not know
    text = yaml.safe_dump(raw, sort_keys=False)
    (b / "manifest.yaml").write_text(text + INTEGRITY + hashlib.sha256(text.encode()).hexdigest() + "\n")
    with pytest.raises(BundleError, match=r"written by edgead 9.1.0, newer than this edgead .* update edgead to 9.1.0"):
        load_bundle(b)
