"""Each metric against an independent computation (scikit-learn, scipy) on known inputs."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from edgead.core.metrics import aupro, auroc, average_precision, f1_max, pixel_metrics, trapezoid


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    y[:2] = [0, 1]
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.max(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0))
    assert f1_max(y, s)[0] == pytest.approx(f1, abs=1e-12)


def test_known_values():
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert f1_max(y, np.array([0.1, 0.2, 0.3, 0.4]))[0] == 1.0
    with pytest.raises(ValueError, match="both normal and anomalous"):
        auroc(np.zeros(3), np.arange(3.0))


def _reference_aupro(maps, masks, limit=0.3, n=4000):
    """Thresholds on a fine grid, scipy labelling: the textbook definition."""
    thresholds = np.linspace(maps.max(), maps.min(), n)
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    region_list = []
    for i, m in enumerate(masks):
        lab, k = ndimage.label(m, structure=np.ones((3, 3)))
        region_list += [(i, lab == j) for j in range(1, k + 1)]
    for t in thresholds:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(np.mean([(pred[i] & r).sum() / r.sum() for i, r in region_list]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= limit
    x, y = fprs[keep], pros[keep]
    y_lim = np.interp(limit, fprs, pros)
    x, y = np.r_[x, limit], np.r_[y, y_lim]
    return trapezoid(y, x) / limit


@pytest.mark.parametrize("seed", range(3))
def test_aupro_against_reference(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 32, 32), bool)
    masks[0, 4:10, 4:12] = True
    masks[0, 20:30, 20:23] = True
    masks[2, 10:20, 5:15] = True
    maps = rng.normal(0, 1, masks.shape) + masks * rng.uniform(0.5, 2.0)
    ours = aupro(maps, masks)
    ref = _reference_aupro(maps, masks)
    assert ours == pytest.approx(ref, abs=2e-3)
    assert 0 < ours < 1


def test_perfect_maps_give_perfect_pixel_metrics():
    masks = np.zeros((2, 16, 16), bool)
    masks[1, 3:8, 3:8] = True
    m = pixel_metrics(masks.astype(float), masks)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["f1max"] == 1.0
    assert m["aupro_0.3"] == pytest.approx(1.0, abs=1e-9)
