"""Datasets on disk: the MVTec AD layout and a plain folder layout.

MVTec layout::

    root/train/good/*.png                  anomaly-free training images
    root/validation/good/*.png             optional: anomaly-free calibration images
    root/test/<good|defect>/*.png          test images
    root/ground_truth/<defect>/<stem>_mask.png

Plain folder layout (one labelled set)::

    root/good/*.png                        anomaly-free images
    root/<defect>/*.png                    any other folder holds anomalous images
    root/masks/<defect>/<stem>[_mask].png  optional pixel masks

For training, normal images are split into train and validation (calibration) images; for
evaluation, the MVTec test split, or every image of a plain folder, is the test set.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core.errors import DataError
from .io import list_images

Layout = Literal["mvtec", "folder"]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    """0: anomaly-free, 1: anomalous."""
    defect: str = "good"
    mask_path: Path | None = None


@dataclass
class AnomalyDataset:
    root: Path
    layout: Layout
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample] = field(default_factory=list)
    validation_source: str = ""

    @property
    def name(self) -> str:
        return self.root.name

    def fingerprint(self) -> str:
        """sha256 over the training and validation images' names and bytes (provenance)."""
        h = hashlib.sha256()
        for s in sorted(self.train + self.validation, key=lambda s: str(s.path)):
            h.update(str(s.path.relative_to(self.root)).encode())
            h.update(s.path.read_bytes())
        return h.hexdigest()

    def provenance(self) -> dict:
        """What a training run records about its data: evaluation uses ``train_hashes`` and
        ``validation_hashes`` to keep training and calibration images out of the test metrics, whatever their names
        or folders."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "fingerprint": self.fingerprint(),
            "train_images": len(self.train),
            "validation_images": len(self.validation),
            "validation_source": self.validation_source,
            "train_hashes": sorted(content_hash(s.path) for s in self.train),
            "validation_hashes": sorted(content_hash(s.path) for s in self.validation),
        }

    def describe(self) -> str:
        n_bad = sum(s.label for s in self.test)
        return (
            f"{self.root} ({self.layout} layout): {len(self.train)} training, "
            f"{len(self.validation)} validation ({self.validation_source}), "
            f"{len(self.test)} test images ({len(self.test) - n_bad} good, {n_bad} anomalous)"
        )


def content_hash(path: Path) -> str:
    """First 16 hex digits of the sha256 of a file's bytes (identifies an image wherever it lies)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_dataset(
    root: str | Path,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> AnomalyDataset:
    """Discover the layout of ``root`` and list its samples (no pixels are read)."""
    r = Path(root)
    if not r.exists():
        raise DataError(f"dataset folder not found: {r}")
    if not r.is_dir():
        raise DataError(f"dataset path is not a folder: {r}")
    if (r / "train").is_dir():
        return _load_mvtec(r, validation_fraction, split_seed)
    if (r / "good").is_dir():
        return _load_folder(r, validation_fraction, split_seed)
    raise DataError(
        f"{r} has neither train/good (MVTec layout) nor good/ (folder layout); put anomaly-free images in one of them"
    )


def _images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"missing folder {folder} ({what})")
    files = list_images(folder)
    if not files:
        raise DataError(f"no images in {folder} ({what}); expected .png/.jpg/.bmp/.tif files")
    return files


MIN_HELD_OUT = 3
"""Calibration needs at least this many held-out good images (edgead.runtime.calibration)."""


def _split(files: list[Path], fraction: float, seed: int, where: Path) -> tuple[list[Path], list[Path]]:
    n_val = int(round(len(files) * fraction)) if fraction > 0 else 0
    if fraction > 0 and len(files) >= 8:
        n_val = max(n_val, MIN_HELD_OUT)
    elif fraction > 0 and len(files) >= 4:
        n_val = max(n_val, 1)
    if len(files) - n_val < 1:
        raise DataError(f"{where}: {len(files)} images are too few to hold out {fraction:.0%} for validation")
    order = list(files)
    random.Random(seed).shuffle(order)
    val = sorted(order[:n_val])
    return sorted(set(files) - set(val)), val


def _find_mask(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (f"{stem}_mask", stem):
            for suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


def _load_mvtec(root: Path, fraction: float, seed: int) -> AnomalyDataset:
    train_files = _images(root / "train" / "good", "anomaly-free training images")
    val_dir = root / "validation" / "good"
    if val_dir.is_dir():
        val_files = _images(val_dir, "anomaly-free validation images")
        source = "validation/good"
    else:
        train_files, val_files = _split(train_files, fraction, seed, root / "train" / "good")
        source = f"{fraction:.0%} of train/good held out"
    test: list[Sample] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            label = 0 if defect == "good" else 1
            gt_dir = root / "ground_truth" / defect
            for f in list_images(defect_dir):
                mask = _find_mask([gt_dir], f.stem) if label else None
                test.append(Sample(f, label, defect, mask))
    return AnomalyDataset(
        root,
        "mvtec",
        [Sample(f, 0) for f in train_files],
        [Sample(f, 0) for f in val_files],
        test,
        source,
    )


def _load_folder(root: Path, fraction: float, seed: int) -> AnomalyDataset:
    good = _images(root / "good", "anomaly-free images")
    train_files, val_files = _split(good, fraction, seed, root / "good")
    test = [Sample(f, 0) for f in good]
    for defect_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if defect_dir.name in ("good", "masks"):
            continue
        masks = [root / "masks" / defect_dir.name]
        for f in list_images(defect_dir):
            test.append(Sample(f, 1, defect_dir.name, _find_mask(masks, f.stem)))
    return AnomalyDataset(
        root,
        "folder",
        [Sample(f, 0) for f in train_files],
        [Sample(f, 0) for f in val_files],
        test,
        f"{fraction:.0%} of good/ held out",
    )
