import cv2
import numpy as np
import pytest
import torch

from edgead.core.errors import DataError
from edgead.data.datasets import load_dataset
from edgead.data.io import read_image, to_rgb_uint8, write_image
from edgead.training import synthesis
from edgead.training.synthesis import (
    AnomalySynthesizer,
    foreground_mask,
    perlin_masks,
    perlin_noise,
)


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
    # 20% of 10 is 2, but calibration needs 3 held-out images when a set has 8 or more
    assert ds.layout == "folder" and len(ds.train) == 7 and len(ds.validation) == 3
    bad = [s for s in ds.test if s.label]
    assert len(bad) == 1 and bad[0].mask_path is not None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "dataset folder not found"),
        (lambda p: p.mkdir(), "neither train/good"),
        (lambda p: (p / "train/good").mkdir(parents=True), "no images in"),
    ],
)
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


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding only the orientation tag (what a phone or camera writes)."""
    import struct

    tiff = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack("<I", 0)
    )
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_a_jpeg_is_read_upright_by_its_orientation_tag(tmp_path):
    """A camera stores a sideways part with orientation 6 ("turn 90 degrees clockwise"): read, it is upright."""
    rng = np.random.default_rng(0)
    upright = cv2.GaussianBlur(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), (5, 5), 0)
    sensor = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # how the sensor saw it
    ok, buf = cv2.imencode(".jpg", sensor, [cv2.IMWRITE_JPEG_QUALITY, 98])
    (tmp_path / "part.jpg").write_bytes(_with_orientation(buf.tobytes(), 6))
    got = read_image(tmp_path / "part.jpg")
    assert got.shape == (48, 80, 3)
    want = cv2.cvtColor(upright, cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(got.astype(int) - want).mean() < 0.5 * np.abs(got[::-1, ::-1].astype(int) - want).mean()
    (tmp_path / "plain.jpg").write_bytes(buf.tobytes())
    assert read_image(tmp_path / "plain.jpg").shape == (80, 48, 3)  # no tag: as stored


def test_channel_order_is_declared_not_guessed():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 200
    assert to_rgb_uint8(bgr, color="bgr")[0, 0].tolist() == [200, 0, 0]
    assert to_rgb_uint8(bgr, color="rgb")[0, 0].tolist() == [0, 0, 200]
    with pytest.raises(DataError, match="expected an HxW, HxWx3 or HxWx4"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_perlin_noise_range_and_determinism():
    res = torch.tensor([4, 1]), torch.tensor([8, 2])
    a = perlin_noise(2, 64, *res, _gen(3))
    b = perlin_noise(2, 64, *res, _gen(3))
    assert torch.equal(a, b)
    assert a.shape == (2, 64, 64) and a.abs().max() <= np.sqrt(2) + 1e-6 and a.std() > 0.05
    m = perlin_masks(3, 64, _gen(0), torch.device("cpu"))
    assert m.shape == (3, 1, 64, 64) and set(m.unique().tolist()) <= {0.0, 1.0}


def test_synthesis_follows_equation_12():
    rng = np.random.default_rng(5)
    normal = torch.from_numpy(rng.uniform(0, 1, (6, 3, 64, 64)).astype(np.float32))
    texture = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    syn = AnomalySynthesizer(64, texture)
    out, mask = syn(normal, _gen(1))
    assert out.shape == normal.shape and mask.shape == (6, 1, 64, 64)
    outside = (mask == 0).expand_as(normal)
    assert torch.equal(out[outside], normal[outside])  # (1 - M) * N untouched
    assert (mask.flatten(1).amax(1) == 1).all()  # every sample got an anomaly
    inside = (mask == 1).expand_as(normal)
    assert (out[inside] - normal[inside]).abs().mean() > 0.01  # a blend with another appearance
    again, _ = syn(normal, _gen(1))
    assert torch.equal(out, again)  # the generator alone decides


def test_foreground_restricts_anomalies():
    img = np.full((64, 64, 3), 20, np.uint8)
    cv2.circle(img, (32, 32), 14, (230, 200, 90), -1)
    fg = foreground_mask(img)
    assert fg[32, 32] == 1 and fg[2, 2] == 0
    syn = AnomalySynthesizer(64)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().repeat(5, 1, 1, 1) / 255
    fg_t = torch.from_numpy(fg)[None, None].repeat(5, 1, 1, 1)
    _, mask = syn(x, _gen(0), fg_t)
    assert (mask * (1 - fg_t)).sum() == 0 and mask.sum() > 0


def test_augmentations_match_opencv():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    eq = np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)])
    np.testing.assert_array_equal((synthesis._equalize(x, None)[0] * 255).round().numpy(), eq)
    blur = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2.0)
    np.testing.assert_allclose(synthesis.gaussian_blur(x, 2.0)[0].permute(1, 2, 0).numpy() * 255, blur, atol=0.5)
    hsv = synthesis.rgb_to_hsv(x)
    assert torch.allclose(synthesis.hsv_to_rgb(hsv), x, atol=1e-5)
    cv_sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)[..., 1].astype(np.float32)
    np.testing.assert_allclose(hsv[0, 1].numpy() * 255, cv_sat, atol=1.0)
    shuffled = synthesis.shuffle_patches(x, 4, _gen(2))
    assert torch.equal(shuffled.flatten().sort().values, x.flatten().sort().values)  # same pixels, moved


def test_texture_folder(tmp_path):
    write_image(tmp_path / "t" / "a.jpg", np.full((40, 50, 3), 9, np.uint8))
    syn = AnomalySynthesizer.from_folder(32, tmp_path / "t")
    assert syn.textures.shape == (1, 3, 32, 32) and syn.textures.dtype == torch.uint8
    with pytest.raises(DataError, match="texture folder not found"):
        AnomalySynthesizer.from_folder(32, tmp_path / "nope")
