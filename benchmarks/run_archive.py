"""Pack a training run into compact archives (fp16 weights) and unpack them back to fp32.

Used to bring runs trained on a GPU machine back to a development machine. One archive per
network keeps every file small (the GPU machine returns files of at most 16 MiB); each archive
also carries the run's config.yaml and train_log.jsonl:

    python benchmarks/run_archive.py pack runs/tire OUT/tire          # OUT/tire-denoiser.tar, ...
    python benchmarks/run_archive.py unpack OUT/tire runs/tire-s       # every OUT/tire-*.tar
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

from safetensors.torch import load, load_file, save, save_file

KEEP = ("config.yaml", "train_log.jsonl")


def pack(run: Path, prefix: Path) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(run.glob("*.safetensors")):
        archive = prefix.with_name(f"{prefix.name}-{f.stem}.tar")
        with tarfile.open(archive, "w") as tar:
            half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}
            data = save(half)
            info = tarfile.TarInfo(f.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for name in KEEP:
                if (run / name).is_file():
                    tar.add(run / name, arcname=name)
        written.append(archive)
    return written


def unpack(prefix: Path, run: Path) -> None:
    archives = sorted(prefix.parent.glob(f"{prefix.name}-*.tar"))
    if not archives:
        raise SystemExit(f"no archives {prefix}-*.tar")
    run.mkdir(parents=True, exist_ok=False)
    for archive in archives:
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
    if a.action == "pack":
        for p in pack(a.src, a.dst):
            print(p, p.stat().st_size)
    else:
        unpack(a.src, a.dst)


if __name__ == "__main__":
    main()
