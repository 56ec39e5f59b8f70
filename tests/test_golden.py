"""No behaviour change by accident: the tiny bundle of every method, trained and exported today with the settings
of edgead 0.8, gives the scores edgead 0.8 (c9ef5ab) gave (tests/golden/scores.json, made by
tests/golden/scores.py). A change of scores is then a decision, made by changing a default, not a side effect of
moving code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_every_methods_bundle_scores_as_edgead_08_scored_it(tmp_path):
    sys.path.insert(0, str(GOLDEN))
    try:
        from scores import scores
    finally:
        sys.path.remove(str(GOLDEN))
    want = json.loads((GOLDEN / "scores.json").read_text())
    got = scores(tmp_path)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name]["scores"] == pytest.approx(want[name]["scores"], rel=1e-4, abs=1e-5), name
        if want[name]["image_threshold"] is not None:
            assert got[name]["image_threshold"] == pytest.approx(want[name]["image_threshold"], rel=1e-4), name
