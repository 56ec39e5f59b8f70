"""A procedurally generated product data set in the MVTec layout (for the demo and tests).

The "product" is a woven surface (a sinusoidal weave with fine noise, random phase per image);
defects are scratches, stains and holes drawn with ground-truth masks. Fully deterministic.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .io import write_image

DEFECTS = ("scratch", "stain", "hole")


def _surface(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 8.0
    px, py = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(2 * np.pi * x / period + px) * np.sin(2 * np.pi * y / period + py)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.0)
    base = 0.55 + 0.18 * weave + 0.05 * fine
    tint = np.array([0.75, 0.82, 0.95], np.float32) * rng.uniform(0.97, 1.03)
    return np.clip(base[..., None] * tint * 255, 0, 255).astype(np.uint8)


def _defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    out = img.copy()
    c = rng.integers(size // 5, 4 * size // 5, 2)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.15, 0.35) * size
        d = np.array([np.cos(angle), np.sin(angle)]) * half
        p0, p1 = (c - d).astype(int), (c + d).astype(int)
        width = max(2, size // 48)
        cv2.line(mask, tuple(map(int, p0)), tuple(map(int, p1)), 255, width)
        colour = np.array([245, 245, 240]) if rng.random() < 0.5 else np.array([40, 40, 45])
    elif kind == "stain":
        axes = (int(rng.uniform(0.06, 0.14) * size), int(rng.uniform(0.04, 0.1) * size))
        cv2.ellipse(mask, tuple(map(int, c)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        colour = np.array([150, 100, 40])
    elif kind == "hole":
        cv2.circle(mask, tuple(map(int, c)), int(rng.uniform(0.04, 0.08) * size), 255, -1)
        colour = np.array([15, 15, 15])
    else:
        raise ValueError(f"kind must be one of {', '.join(DEFECTS)}; got {kind!r}")
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.8)[..., None]
    out = (out * (1 - soft) + colour * soft).astype(np.uint8)
    return out, (mask > 0).astype(np.uint8) * 255


def make_demo_dataset(
    root: Path,
    size: int = 128,
    n_train: int = 60,
    n_val: int = 12,
    n_test_good: int = 12,
    n_per_defect: int = 8,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:03d}.png", _surface(size, rng))
    for i in range(n_val):
        write_image(root / "validation" / "good" / f"{i:03d}.png", _surface(size, rng))
    for i in range(n_test_good):
        write_image(root / "test" / "good" / f"{i:03d}.png", _surface(size, rng))
    for kind in DEFECTS:
        for i in range(n_per_defect):
            img, mask = _defect(_surface(size, rng), kind, rng)
            write_image(root / "test" / kind / f"{i:03d}.png", img)
            write_image(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return root
