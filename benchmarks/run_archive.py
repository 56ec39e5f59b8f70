"""Pack a training run into one compact archive (fp16 weights) and unpack it back to fp32.

Used to bring runs trained on a GPU machine back to a development machine:

    python benchmarks/run_archive.py pack runs/tire tire.tar
    python benchmarks/run_archive.py unpack tire.tar runs/tire
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

from safetensors.torch import load, load_file, save, save_file

KEEP = ("config.yaml", "train_log.jsonl")


def pack(run: Path, archive: Path) -> None:
    with tarfile.open(archive, "w") as tar:
        for f in sorted(run.glob("*.safetensors")):
            half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}
            data = save(half)
            info = tarfile.TarInfo(f.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in KEEP:
            if (run / name).is_file():
                tar.add(run / name, arcname=name)


def unpack(archive: Path, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=False)
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if m.name.endswith(".safetensors"):
                full = {k: v.float() if v.is_floating_point() else v for k, v in load(data).items()}
                save_file(full, str(run / m.name))
            elif m.name in KEEP:
                (run / m.name).write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    (pack if a.action == "pack" else unpack)(a.src, a.dst)


if __name__ == "__main__":
    main()
