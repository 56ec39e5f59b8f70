"""Calibration from anomaly-free images only: thresholds, normalisation and how sure we are of them.

Rule ``tolerance`` (default): the image threshold is a one-sided normal tolerance limit of the
good images' scores, transformed to where a normal tail is plausible: the logit for methods whose
scores are probabilities (the threshold then stays below 1), the log for positive scores (anomaly
scores are right-skewed), none otherwise:

    threshold = g^-1(mean + k * std) of g(scores)     k = k(n, target_frr, confidence)

so that with probability ``confidence`` at most ``target_frr`` of good parts score above it. k is
the exact factor, t'_confidence(n - 1, z_(1 - target_frr) * sqrt(n)) / sqrt(n) (noncentral t),
computed here without scipy. With few images k grows (n = 3: k = 10.6 for 1% at 95%) instead of
pretending to know the tail; the threshold's 90% bootstrap interval is recorded and a warning
is given below ``min_images``. Rule ``k_sigma``: mean + k_sigma * std (edgead 0.1).

The pixel threshold applies the same rule to each good image's map maximum, so "a good image
shows no anomalous pixel" is what it targets. Test images are never used here; ``edgead
calibrate`` re-runs this on a line's own good parts without retraining.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from ..core.config import CalibrationConfig
from ..core.errors import DataError
from ..core.manifest import Calibration, Stats
from ..core.metrics import trapezoid
from ..core.progress import tracked
from ..data.io import read_image
from .detector import Detector

log = logging.getLogger(__name__)
MIN_TOLERANCE_IMAGES = 3
OUTLIER_Z = 5.0
MIN_SCREENED_IMAGES = 8
"""Fewer good images than this are not screened for outliers: their median and MAD say too little."""


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 for erfc, |error| < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erfc = poly * np.exp(-z * z)
    return np.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


def _norm_ppf(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


@functools.lru_cache(maxsize=256)
def tolerance_factor(n: int, target_frr: float, confidence: float) -> float:
    """k of the one-sided normal tolerance limit mean + k * std (n samples)."""
    if n < MIN_TOLERANCE_IMAGES:
        raise ValueError(f"a tolerance limit needs at least {MIN_TOLERANCE_IMAGES} values, got {n}")
    nu, delta = n - 1, _norm_ppf(1.0 - target_frr) * math.sqrt(n)
    # W = sqrt(V / nu), V ~ chi2(nu):  P(T' <= x) = E[ Phi(x W - delta) ]
    w = np.linspace(1e-6, 1.0 + 12.0 / math.sqrt(nu) + 6.0 * (nu < 8), 8001)
    v = nu * w * w
    log_chi2 = (nu / 2 - 1) * np.log(v) - v / 2 - (nu / 2) * math.log(2) - math.lgamma(nu / 2)
    density = np.exp(log_chi2) * 2 * nu * w
    density /= trapezoid(density, w)

    def cdf(x: float) -> float:
        return float(trapezoid(_norm_cdf(x * w - delta) * density, w))

    lo, hi = 0.0, 10.0 * delta + 100.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < confidence else (lo, mid)
    return 0.5 * (lo + hi) / math.sqrt(n)


TRANSFORMS = {
    "logit": (lambda v: np.log(v / (1 - v)), lambda y: 1 / (1 + math.exp(-y))),
    "log": (np.log, math.exp),
    "none": (lambda v: v, float),
}


def _transform(values: np.ndarray, unit_interval: bool) -> str:
    if unit_interval and np.all((values > 0) & (values < 1)):
        return "logit"
    return "log" if np.all(values > 0) else "none"


def _rule_threshold(values: np.ndarray, config: CalibrationConfig, transform: str) -> tuple[float, float]:
    """(threshold, factor) for one set of good-image values."""
    if config.rule == "k_sigma":
        return float(values.mean() + config.k_sigma * values.std()), config.k_sigma
    if config.rule != "tolerance":
        raise ValueError(f"calibration.rule must be one of 'tolerance', 'k_sigma'; got {config.rule!r}")
    k = tolerance_factor(len(values), config.target_frr, config.confidence)
    forward, inverse = TRANSFORMS[transform]
    y = forward(values)
    return float(inverse(float(y.mean() + k * y.std(ddof=1)))), k


def fit(
    values: np.ndarray, config: CalibrationConfig, lower: float | None = None, unit_interval: bool = False
) -> tuple[Stats, float, str]:
    v = np.asarray(values, np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("calibration needs finite scores from anomaly-free images")
    transform = _transform(v, unit_interval) if config.rule == "tolerance" else "none"
    threshold, k = _rule_threshold(v, config, transform)
    stats = Stats(
        min=float(v.min()) if lower is None else float(lower),
        max=float(v.max()),
        threshold=threshold,
        mean=float(v.mean()),
        std=float(v.std()),
    )
    return stats, k, transform


def _bootstrap_interval(values: np.ndarray, config: CalibrationConfig, transform: str, draws: int = 200) -> list[float]:
    """90% interval of the threshold over bootstrap resamples of the good images (seeded)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(draws):
        sample = values[rng.integers(0, len(values), len(values))]
        if sample.std() > 0:
            out.append(_rule_threshold(sample, config, transform)[0])
    if not out:
        return [float(values[0])] * 2
    return [float(np.percentile(out, 5)), float(np.percentile(out, 95))]


def outliers(scores: np.ndarray) -> np.ndarray:
    """Indices of scores far above the rest: robust z = (s - median) / (1.4826 MAD) over OUTLIER_Z.

    A few defective parts among the "good" images raise a mean + k * std threshold until defects like
    them pass; the median and MAD do not follow them.
    """
    s = np.asarray(scores, np.float64)
    mad = 1.4826 * float(np.median(np.abs(s - np.median(s))))
    if len(s) < MIN_SCREENED_IMAGES or mad <= 0:
        return np.zeros(0, int)
    return np.flatnonzero((s - np.median(s)) / mad > OUTLIER_Z)


def calibration_from_scores(
    scores: np.ndarray,
    map_maxima: np.ndarray,
    map_min: float,
    config: CalibrationConfig,
    source: str,
    unit_interval: bool = False,
    names: list[str] | None = None,
    recalibrating: bool = False,
) -> Calibration:
    """``recalibrating``: for ``edgead calibrate``, which reports the warnings itself (they are not logged)
    and whose advice is more good parts, not the command just run."""
    n = len(scores)
    if config.rule == "tolerance" and n < MIN_TOLERANCE_IMAGES:
        raise DataError(
            f"calibration needs at least {MIN_TOLERANCE_IMAGES} anomaly-free images for the "
            f"tolerance rule, got {n}; add good images (validation/good, or --good DIR)"
        )
    image, k, transform = fit(scores, config, unit_interval=unit_interval)
    warnings = []
    with np.errstate(divide="ignore", invalid="ignore"):  # screened in the scale the rule works in
        far = outliers(TRANSFORMS[transform][0](np.asarray(scores, np.float64)))
    if len(far):
        named = ", ".join((names[i] if names else f"image {i + 1}") + f" ({scores[i]:.4g})" for i in far[:5])
        more = f" and {len(far) - 5} more" if len(far) > 5 else ""
        text = (
            f"{len(far)} of the {n} good images score far above the others (median {np.median(scores):.4g}): "
            f"{named}{more}; if they are defective parts, remove them, since the threshold rises with them"
        )
        if config.outliers == "refuse":
            raise DataError(text + " (calibration.outliers=refuse; nothing was changed)")
        warnings.append(text)
    pixel, _, _ = fit(map_maxima, config, lower=map_min, unit_interval=unit_interval)
    interval = _bootstrap_interval(np.asarray(scores, np.float64), config, transform)
    if float(np.ptp(scores)) == 0.0:
        warnings.append(
            f"all {n} good images score the same ({scores[0]:.4g}): the threshold's spread is "
            "unknown (the same image given several times, or a constant frame?)"
        )
    if n < config.min_images:
        advice = (
            "calibrate again on more good parts to narrow it"
            if recalibrating
            else "re-calibrate on a line's own good parts with 'edgead calibrate BUNDLE --good DIR'"
        )
        warnings.append(
            f"only {n} anomaly-free images calibrated the threshold ({config.min_images} or more recommended): "
            f"its 90% bootstrap interval is {interval[0]:.4g} to {interval[1]:.4g}; {advice}"
        )
    for w in [] if recalibrating else warnings:
        log.warning(w)
    return Calibration(
        rule=config.rule,
        n_images=n,
        source=source,
        image=image,
        pixel=pixel,
        k=k,
        transform=transform,
        target_frr=config.target_frr if config.rule == "tolerance" else None,
        confidence=config.confidence if config.rule == "tolerance" else None,
        threshold_interval=interval,
        calibration_frr=float(np.mean(np.asarray(scores) > image.threshold)),
        warnings=warnings,
    )


def run_images(
    detector: Detector,
    images: Iterable[Path | np.ndarray],
    batch: int = 4,
    progress: bool = False,
    desc: str = "score",
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed maps [N, h, w] and image scores [N] for image files or uint8 RGB arrays, in batches."""
    maps, scores, pending = [], [], []

    def flush():
        scored = detector.score_batch(pending)
        maps.append(scored.maps)
        scores.append(scored.scores)
        pending.clear()

    for item in tracked(images, desc, total, bar=progress, unit="image"):
        pending.append(read_image(item) if isinstance(item, (str, Path)) else item)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if not scores:
        raise DataError("no anomaly-free images to calibrate on")
    return np.concatenate(maps), np.concatenate(scores)


@dataclass
class MoreGood:
    """Scores of anomaly-free images computed another way: export's training images, each scored against a
    memory bank without the patches it contributed (cross-fitted), so that they count as unseen good parts."""

    scores: np.ndarray
    map_maxima: np.ndarray
    map_min: float
    names: list[str]
    source: str


def calibrate(
    bundle: Bundle,
    images: list[Path] | Iterable[np.ndarray],
    config: CalibrationConfig,
    source: str,
    backend: str = "onnxruntime-cpu",
    progress: bool = False,
    total: int | None = None,
    names: list[str] | None = None,
    more: MoreGood | None = None,
) -> tuple[Calibration, np.ndarray]:
    """The calibration and the good images' image scores it was fitted on (``names``: the images' names in
    order, for warnings; it may be filled while ``images`` is consumed; ``more``: good scores from elsewhere)."""
    det = Detector(bundle, backend=backend, require_calibration=False)  # maps and scores need no thresholds
    try:
        maps, scores = run_images(det, images, progress=progress, desc="calibrate", total=total)
    finally:
        det.close()
    maxima = maps.reshape(len(maps), -1).max(axis=1)
    lowest = float(maps.min())
    if names is None and isinstance(images, list):
        names = [str(p) if isinstance(p, (str, Path)) else f"image {i + 1}" for i, p in enumerate(images)]
    if more is not None and len(more.scores):
        scores = np.concatenate([scores, more.scores])
        maxima = np.concatenate([maxima, more.map_maxima])
        lowest = min(lowest, more.map_min)
        names = None if names is None else [*names, *more.names]
        source = f"{source} + {more.source}"
    return calibration_from_scores(
        scores, maxima, lowest, config, source, bundle.manifest.scoring.unit_interval, names
    ), scores


def images_for_misses(
    good: np.ndarray, anomalous: np.ndarray, cal: Calibration, max_miss: float, limit: int = 100_000
) -> int | None:
    """How many good images the tolerance rule needs for its threshold to miss at most ``max_miss`` of the
    ``anomalous`` scores, if the good scores keep the spread measured now; None when no number would do
    (the model does not separate them enough at this false-reject target) or the rule is not the tolerance one.

    k(n) falls towards z_(1 - target_frr) as n grows: the answer is the smallest n with
    mean + k(n) * std < the max_miss quantile of the anomalous scores (both in the calibration's transform).
    """
    if cal.rule != "tolerance" or len(good) < MIN_TOLERANCE_IMAGES or len(anomalous) == 0:
        return None
    forward = TRANSFORMS[cal.transform][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = forward(np.asarray(good, np.float64))
        ya = np.nan_to_num(forward(np.asarray(anomalous, np.float64)), nan=-np.inf)  # out of the domain: missed
    mean, std = float(y.mean()), float(y.std(ddof=1))
    room = float(np.quantile(ya, max_miss))
    if std <= 0 or not np.isfinite(room):
        return None

    def enough(n: int) -> bool:
        return mean + tolerance_factor(n, cal.target_frr, cal.confidence) * std < room

    if not enough(limit):
        return None
    lo, hi = MIN_TOLERANCE_IMAGES, limit  # enough(hi); find the smallest
    if enough(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


@dataclass
class FrameLog:
    """What good_frames used and left out, filled while the frames are consumed."""

    used: list[str] = field(default_factory=list)
    training: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def good_frames(
    specs: list[str], max_frames: int | None = None, skip: set[str] | None = None, record: FrameLog | None = None
) -> Iterable[np.ndarray]:
    """uint8 RGB frames from image files, folders, globs, videos or live sources, in order.

    Image files whose content hash is in ``skip`` (the model's training images) are left out: a model
    scores its own training images lower than new good parts, so they would pull the threshold down.
    A frame identical to one already used is left out too: one image given 25 times is one image,
    not 25 (it would shrink the spread the threshold is built on).
    """
    from ..data.datasets import content_hash
    from .sources import ImageFilesSource, open_source

    record = record if record is not None else FrameLog()
    seen: set[bytes] = set()
    n = 0
    for spec in specs:
        with open_source(spec) as src:
            if src.live and max_frames is None:
                raise DataError(f"{spec} is a live source: give --max-frames to say how many frames to use")
            files = isinstance(src, ImageFilesSource)
            for frame in src.frames():
                if skip and files and content_hash(Path(frame.source)) in skip:
                    record.training.append(frame.source)
                    continue
                name = frame.source if files else f"{frame.source} frame {frame.index}"
                digest = hashlib.sha256(frame.image.tobytes()).digest()
                if digest in seen:
                    record.duplicates.append(name)
                    continue
                seen.add(digest)
                record.used.append(name)
                yield frame.image
                n += 1
                if max_frames is not None and n >= max_frames:
                    return


SUSPECT_Z = 3.0
"""A given good image is a suspect when the bundle judges it anomalous (above its current threshold) and it
scores this many robust standard deviations above the other given images and the bundle's own good images."""
MAX_CAUGHT_LOSS = 0.5
"""A new threshold may not pass more than this share of the bundle's synthetic anomalies that the current one
catches, unless the user accepts it (``--accept-misses``)."""
MIN_CAUGHT = 0.2
"""Below this share of synthetic anomalies caught, the current threshold says too little to guard the new one."""
INT8_RECHECK_FRAMES = 24


def rounded_scores(values: np.ndarray) -> list[float]:
    """Scores for the manifest: 7 significant digits, enough to screen and check against."""
    return [float(f"{v:.7g}") for v in np.asarray(values, np.float64)]


def suspects(scores: np.ndarray, old: Calibration | None, unit_interval: bool = False) -> np.ndarray:
    """Indices of given "good" images that look like defective parts: above every good image the bundle was
    calibrated on, and far above the rest (robust z over SUSPECT_Z against the median and MAD of the given
    images together with the bundle's own good scores, in the scale the threshold rule works in).

    A screen of the given images alone cannot catch two defective parts among eight; the bundle's own good
    scores give the spread of good parts. When most given images score that high, the line looks different
    from the calibration images (camera, light, video) or the folder is wrong: none is singled out (the caller
    says so).
    """
    s = np.asarray(scores, np.float64)
    if old is None or len(s) == 0:
        return np.zeros(0, int)
    known = np.asarray(old.good_scores, np.float64)
    highest = float(known.max()) if len(known) else old.image.max
    high = s > highest
    pool = np.concatenate([s, known])
    if not high.any() or 2 * high.sum() >= len(s) or len(pool) < 2 * MIN_TOLERANCE_IMAGES:
        return np.zeros(0, int)
    forward = TRANSFORMS[_transform(pool, unit_interval)][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        y, yp = forward(s), forward(pool)
    med = float(np.median(yp))
    mad = 1.4826 * float(np.median(np.abs(yp - med)))
    z = (y - med) / max(mad, 1e-12)
    return np.flatnonzero(high & (z > SUSPECT_Z))


def _caught(synthetic: list[float], threshold: float) -> float:
    return float(np.mean(np.asarray(synthetic) > threshold))


def _raising_most(scores: np.ndarray, names: list[str], config: CalibrationConfig, transform: str, n: int = 3) -> str:
    """The images whose removal lowers the threshold most (leave-one-out), for a message."""
    if config.rule == "tolerance" and len(scores) <= MIN_TOLERANCE_IMAGES:  # one fewer is too few for the rule
        return f"all {len(scores)} (too few to leave one out)"
    full = _rule_threshold(scores, config, transform)[0]
    drops = [(full - _rule_threshold(np.delete(scores, i), config, transform)[0], i) for i in range(len(scores))]
    top = [i for d, i in sorted(drops, reverse=True)[:n] if d > 0]
    return ", ".join(f"{names[i]} ({scores[i]:.4g})" for i in top) or "none in particular"


def recalibrate(
    bundle: Bundle,
    specs: list[str],
    config: CalibrationConfig,
    backend: str = "auto",
    max_frames: int | None = None,
    progress: bool = False,
    sign_key: str | Path | None = None,
    product: str | None = None,
    keep_suspects: bool = False,
    accept_misses: bool = False,
) -> tuple[Calibration | None, Calibration, bool]:
    """New thresholds for ``bundle`` (one ``product`` of a multi-product bundle) from a line's own good
    parts; the old ones go to the history. Returns (old, new, signature_dropped).

    What the bundle already knows guards the new threshold: given images that look like defective parts
    (``suspects``) are left out and named (refused with ``calibration.outliers=refuse``; used with
    ``keep_suspects``), a threshold that would pass far more of the bundle's synthetic anomalies than the
    current one is refused unless ``accept_misses``, and INT8 stages are measured again against the new
    margin (runtime/int8.py). Nothing is written when it refuses.
    """
    import datetime as dt

    from .int8 import recheck

    m = bundle.manifest
    old = m.calibration_for(product)
    if m.products and product is None:
        product = next(iter(m.products))  # calibration_for accepted it: the only product
    frames = FrameLog()
    sample: list[np.ndarray] = []  # good frames the INT8 stages are re-checked on

    def kept(images: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        for image in images:
            if len(sample) < INT8_RECHECK_FRAMES:
                sample.append(image)
            yield image

    det = Detector(bundle, backend=backend, require_calibration=False)
    try:
        maps, scores = run_images(
            det, kept(good_frames(specs, max_frames, m.training_hashes(), frames)), progress=progress, desc="calibrate"
        )
    except DataError as exc:
        if frames.training and not frames.used:
            raise DataError(
                f"all {len(frames.training)} images given are the model's own training images (same "
                "content); calibrate on good parts it was not trained on"
            ) from None
        raise exc from None
    finally:
        det.close()
    names = frames.used
    unit = m.scoring.unit_interval
    notes = []
    odd = suspects(scores, old, unit)
    if len(odd):
        listed = ", ".join(f"{names[i]} ({scores[i]:.4g})" for i in odd[:5]) + (
            f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        )
        text = (
            f"{len(odd)} of the {len(scores)} given images look like defective parts: they score above every good "
            f"image the bundle was calibrated on and far above the other given images: {listed}"
        )
        if config.outliers == "refuse":
            raise DataError(text + "; remove them (calibration.outliers=refuse; nothing was changed)")
        if keep_suspects:
            notes.append(text + "; used as given (--keep-suspects)")
        else:
            notes.append(text + "; left out of the threshold (if they are good parts, pass --keep-suspects)")
            keep = np.setdiff1d(np.arange(len(scores)), odd)
            maps, scores, names = maps[keep], scores[keep], [names[i] for i in keep]
    elif old is not None and float(np.median(scores)) > old.image.max:
        above = int(np.sum(scores > old.image.threshold))
        notes.append(
            f"the given images score above every good image the bundle was calibrated on (median "
            f"{np.median(scores):.4g}, the highest of its {old.n_images} {old.image.max:.4g}; {above} of "
            f"{len(scores)} above its threshold {old.image.threshold:.4g}): if they are good parts, the line "
            "looks different from the images it was calibrated on (camera, light, video compression) and the "
            "new threshold follows them; if they are not good parts, this is the wrong folder"
        )
    maxima = maps.reshape(len(maps), -1).max(axis=1)
    new = calibration_from_scores(
        scores, maxima, float(maps.min()), config, ", ".join(specs), unit, names, recalibrating=True
    )
    new.good_scores = rounded_scores(scores)
    if old is not None and old.synthetic_scores:
        new.synthetic_scores = list(old.synthetic_scores)
        was, now = (
            _caught(old.synthetic_scores, old.image.threshold),
            _caught(old.synthetic_scores, new.image.threshold),
        )
        new.synthetic_miss_rate = 1.0 - now
        if was >= MIN_CAUGHT and now < (1 - MAX_CAUGHT_LOSS) * was:  # it loses most of what the bundle catches
            text = (
                f"the new threshold {new.image.threshold:.4g} (now {old.image.threshold:.4g}) would pass "
                f"{1 - now:.0%} of the bundle's synthetic anomalies, of which the current one passes {1 - was:.0%}; "
                f"the images that raise it most: "
                f"{_raising_most(scores, names, config, new.transform) if config.rule == 'tolerance' else 'n/a'}"
            )
            if not accept_misses:
                raise DataError(
                    text + "; if the line's good parts really score this high, pass --accept-misses "
                    "(nothing was changed)"
                )
            notes.append(text + " (--accept-misses)")
    if frames.training:
        notes.insert(
            0,
            f"left out {len(frames.training)} of the given images: they are the model's own training "
            f"images (same content), which it scores lower than new good parts; calibrated on the other "
            f"{len(frames.used)}",
        )
    if frames.duplicates:
        notes.insert(
            0,
            f"counted {len(frames.duplicates)} repeated images once (the same pixels as an earlier one, "
            f"e.g. {frames.duplicates[0]}): calibrated on {len(frames.used)} distinct images",
        )
    history = bundle.manifest.provenance.setdefault("calibration_history", [])
    if old is not None:
        history.append(
            {
                "replaced": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                "product": product,
                "source": old.source,
                "n_images": old.n_images,
                "rule": old.rule,
                "image_threshold": old.image.threshold,
                "pixel_threshold": old.pixel.threshold,
            }
        )
    if m.products:
        m.products[product] = new
    else:
        m.calibration = new
    said, obsolete = recheck(bundle, sample, "edgead calibrate moved the threshold")
    new.warnings[:0] = notes + said  # reported by the caller (edgead calibrate prints each once)
    dropped = bundle.save_manifest(sign_key)
    for graph in obsolete:  # no longer listed: removed once the manifest that drops them is written
        graph.unlink(missing_ok=True)
        if graph.parent.is_dir() and not any(graph.parent.iterdir()):
            graph.parent.rmdir()
    return old, new, dropped
