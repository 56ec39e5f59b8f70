"""Training images scored as if unseen, for the default threshold: each against the patch memory bank without the
rows it contributed (the bank records each row's image). Held-out images alone are few (3 for a small set), and
a tolerance limit from 3 scores sits far above good parts and defects alike."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.knn import NearestNeighbourScorer
from ..core.progress import tracked
from ..data.io import read_image
from ..runtime.calibration import MoreGood
from ..runtime.detector import Detector

log = logging.getLogger(__name__)


def cross_fitted_scores(
    bundle: Bundle,
    data_root: Path,
    recorded: tuple[np.ndarray, list[str]] | None,
    scorer_of: Callable[[object], NearestNeighbourScorer],
    progress: bool = False,
) -> MoreGood | None:
    """Every training image scored by the exported graphs with its own bank rows left out. ``recorded``: each bank
    row's image and the images' names relative to ``data_root`` (``training.patch_bank.load_bank_sources``);
    ``scorer_of(pipeline)``: the pipeline's patch scorer. None (said) when the run recorded no sources or the
    images are not all there."""
    if recorded is None:
        log.info("the run records no memory-bank sources (trained before edgead 0.10): held-out images only")
        return None
    sources, names = recorded
    paths = [Path(data_root) / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing or len(paths) < 2 or int(sources.max(initial=-1)) >= len(paths):
        log.warning(
            "the training images of the memory bank are not all under %s (%s): the threshold comes from the held-out "
            "images only",
            data_root,
            missing[0] if missing else "another set",
        )
        return None
    det = Detector(bundle, backend="onnxruntime-cpu", require_calibration=False)
    scorer = scorer_of(det.pipeline)
    scores, maxima, lowest, scored = [], [], np.inf, []
    try:
        for i, path in enumerate(tracked(paths, "cross-fit", len(paths), bar=progress, unit="image")):
            scorer.exclude = sources == i
            if scorer.exclude.all():  # the whole bank came from this image: nothing to score it against
                continue
            out = det.score_batch([read_image(path)])
            scores.append(float(out.scores[0]))
            maxima.append(float(out.maps[0].max()))
            lowest = min(lowest, float(out.maps[0].min()))
            scored.append(names[i])
    finally:
        scorer.exclude = None
        det.close()
    return MoreGood(
        np.asarray(scores),
        np.asarray(maxima),
        float(lowest),
        [f"{n} (left out of the bank)" for n in scored],
        f"{len(scores)} training images, each left out of the memory bank",
    )


def patch_bank_scores(
    bank_sources: tuple[np.ndarray, list[str]] | None, bundle: Bundle, data_root: Path, progress: bool = False
) -> MoreGood | None:
    """The latent methods' training images scored as unseen by their kNN term (each left out of the patch bank).
    Their reconstruction term has seen them, so they score a little lower than unseen good parts; the held-out
    images alone (3 for a small set) put the tolerance limit above every defect (hazelnut_toy: all missed)."""
    return cross_fitted_scores(bundle, data_root, bank_sources, lambda p: p.knn.scorer, progress)
