"""Write a lossless video (FFV1 .mkv) from image files, e.g. to replay test images as a camera.

python benchmarks/make_video.py "../shared/data/tire/test/*/*.png" tire_test.mkv --fps 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from edgead.data.io import read_image
from edgead.runtime.sources import expand_images


def make_video(images: list[Path], path: Path, fps: float = 10.0) -> list:
    """Returns the BGR frames written (decoding the file gives them back exactly)."""
    frames = [cv2.cvtColor(read_image(p), cv2.COLOR_RGB2BGR) for p in images]
    h, w = frames[0].shape[:2]
    frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h)) for f in frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path} (use a .mkv name)")
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", help="files, folders or globs, in order")
    ap.add_argument("out", type=Path)
    ap.add_argument("--fps", type=float, default=10.0)
    a = ap.parse_args()
    files = expand_images(a.images)
    make_video(files, a.out, a.fps)
    print(f"{len(files)} frames -> {a.out}")


if __name__ == "__main__":
    main()
