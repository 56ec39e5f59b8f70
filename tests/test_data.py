import cv2
import numpy as np
import pytest

from edgead.data.datasets import load_dataset
from edgead.data.io import read_image, to_rgb_uint8, write_image
from edgead.data.synthesis import AnomalySynthesizer, foreground_mask, perlin_mask, perlin_noise
from edgead.errors import DataError


def _img(path, value=100, shape=(32, 32, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_mvtec_layout(tmp_path):
    for i in range(5):
        _img(tmp_path / "train/good" / f"{i}.png")
    _img(tmp_path / "test/good/0.png")
    _img(tmp_path / "test/crack/0.png")
    _img(tmp_path / "ground_truth/crack/0_mask.png", 255, (32, 32))
    ds = load_dataset(tmp_path, validation_fraction=0.2)
    assert ds.layout == "mvtec" and len(ds.train) == 4 and len(ds.validation) == 1
    assert {s.defect for s in ds.test} == {"good", "crack"}
    crack = next(s for s in ds.test if s.label)
    assert crack.mask_path.name == "0_mask.png"
    assert "held out" in ds.validation_source
    assert set(ds.train).isdisjoint(ds.validation)


def test_validation_folder_is_preferred(tmp_path):
    for i in range(3):
        _img(tmp_path / "train/good" / f"{i}.png")
    _img(tmp_path / "validation/good/v.png")
    ds = load_dataset(tmp_path)
    assert len(ds.train) == 3 and ds.validation_source == "validation/good"


def test_folder_layout(tmp_path):
    for i in range(10):
        _img(tmp_path / "good" / f"{i}.png")
    _img(tmp_path / "scratch/a.png")
    _img(tmp_path / "masks/scratch/a.png", 255, (32, 32))
    ds = load_dataset(tmp_path, validation_fraction=0.2)
    assert ds.layout == "folder" and len(ds.train) == 8 and len(ds.validation) == 2
    bad = [s for s in ds.test if s.label]
    assert len(bad) == 1 and bad[0].mask_path is not None


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "dataset folder not found"),
    (lambda p: p.mkdir(), "neither train/good"),
    (lambda p: (p / "train/good").mkdir(parents=True), "no images in"),
])
def test_dataset_errors(tmp_path, make, message):
    root = tmp_path / "ds"
    make(root)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_read_image_conversions_and_errors(tmp_path):
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((8, 8), 77, np.uint8))
    assert read_image(gray).shape == (8, 8, 3) and read_image(gray)[0, 0].tolist() == [77] * 3
    rgba = tmp_path / "a.png"
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(rgba), bgra)
    assert read_image(rgba)[0, 0].tolist() == [0, 0, 255]
    wide = tmp_path / "w.png"
    cv2.imwrite(str(wide), np.full((8, 8), 65535, np.uint16))
    assert read_image(wide)[0, 0].tolist() == [255] * 3
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image .*junk.png"):
        read_image(junk)
    with pytest.raises(DataError, match="image not found"):
        read_image(tmp_path / "missing.png")


def test_channel_order_is_declared_not_guessed():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 200
    assert to_rgb_uint8(bgr, color="bgr")[0, 0].tolist() == [200, 0, 0]
    assert to_rgb_uint8(bgr, color="rgb")[0, 0].tolist() == [0, 0, 200]
    with pytest.raises(DataError, match="expected an HxW, HxWx3 or HxWx4"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def test_perlin_noise_range_and_determinism():
    a = perlin_noise((64, 64), (4, 8), np.random.default_rng(3))
    b = perlin_noise((64, 64), (4, 8), np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 64) and np.abs(a).max() <= np.sqrt(2) + 1e-9 and a.std() > 0.05
    m = perlin_mask(64, np.random.default_rng(0))
    assert set(np.unique(m)) <= {0.0, 1.0}


def test_synthesis_follows_equation_12():
    rng = np.random.default_rng(5)
    normal = (rng.uniform(0, 255, (64, 64, 3))).astype(np.uint8)
    texture = np.full((64, 64, 3), 0, np.uint8)
    syn = AnomalySynthesizer(64, [texture])
    for seed in range(6):
        out, mask = syn(normal, np.random.default_rng(seed))
        outside = mask == 0
        np.testing.assert_array_equal(out[outside], normal[outside])  # (1 - M) * N untouched
        assert mask.any()
        # inside: a blend beta*N + (1-beta)*A with beta in [0.2, 0.8] never keeps N exactly
        inside = mask == 1
        assert out[inside].shape[0] == int(mask.sum())
    a1 = syn(normal, np.random.default_rng(9))
    a2 = syn(normal, np.random.default_rng(9))
    np.testing.assert_array_equal(a1[0], a2[0])


def test_foreground_restricts_anomalies():
    img = np.full((64, 64, 3), 20, np.uint8)
    cv2.circle(img, (32, 32), 14, (230, 200, 90), -1)
    fg = foreground_mask(img)
    assert fg[32, 32] == 1 and fg[2, 2] == 0
    syn = AnomalySynthesizer(64, [], foreground=True)
    for seed in range(5):
        _, mask = syn(img, np.random.default_rng(seed))
        assert (mask * (1 - fg)).sum() == 0


def test_texture_folder(tmp_path):
    write_image(tmp_path / "t" / "a.jpg", np.full((40, 50, 3), 9, np.uint8))
    syn = AnomalySynthesizer.from_folder(32, tmp_path / "t")
    assert len(syn.textures) == 1 and syn.textures[0].shape == (32, 32, 3)
    with pytest.raises(DataError, match="texture folder not found"):
        AnomalySynthesizer.from_folder(32, tmp_path / "nope")
