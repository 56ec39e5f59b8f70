"""Pack a training run into compact archives (fp16 weights) and unpack them back to fp32.

Used to bring runs trained on a GPU machine back to a development machine. One archive per
network keeps every file small (the GPU machine returns files of at most 16 MiB, and at most 8);
``--single`` puts the whole run in one archive instead. Each archive also carries the run's
config.yaml and train_log.jsonl. ``--only`` keeps some networks; ``--redo`` leaves stages out of the
packed config.yaml, so that stages which are cheap to recompute (D3AD's kNN prior) need not travel:

    python benchmarks/run_archive.py pack runs/tire OUT/tire          # OUT/tire-denoiser.tar, ...
    python benchmarks/run_archive.py pack runs/tire OUT/tire --single \
        --only autoencoder denoiser feature_extractor patch_bank --redo prior      # OUT/tire.tar
    python benchmarks/run_archive.py unpack OUT/tire runs/tire-s       # OUT/tire.tar or every OUT/tire-*.tar
    edgead train --method d3ad --data DATA --out runs/tire-s --stage prior          # the stage left out
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import yaml
from safetensors.torch import load, load_file, save, save_file

KEEP = ("config.yaml", "train_log.jsonl")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _run_files(run: Path, redo: list[str]) -> dict[str, bytes]:
    files = {name: (run / name).read_bytes() for name in KEEP if (run / name).is_file()}
    if redo and "config.yaml" in files:
        meta = yaml.safe_load(files["config.yaml"])
        for stage in redo:
            meta.get("stages", {}).pop(stage, None)
        files["config.yaml"] = yaml.safe_dump(meta, sort_keys=False).encode()
    return files


def pack(
    run: Path, prefix: Path, only: list[str] | None = None, redo: list[str] = (), single: bool = False
) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    nets = [f for f in sorted(run.glob("*.safetensors")) if only is None or f.stem in only]
    groups = (
        [(prefix.with_name(f"{prefix.name}.tar"), nets)]
        if single
        else [(prefix.with_name(f"{prefix.name}-{f.stem}.tar"), [f]) for f in nets]
    )
    written = []
    for archive, members in groups:
        with tarfile.open(archive, "w") as tar:
            for f in members:
                _add(
                    tar,
                    f.name,
                    save({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}),
                )
            for name, data in _run_files(run, list(redo)).items():
                _add(tar, name, data)
        written.append(archive)
    return written


def unpack(prefix: Path, run: Path) -> None:
    archives = sorted([*prefix.parent.glob(f"{prefix.name}.tar"), *prefix.parent.glob(f"{prefix.name}-*.tar")])
    if not archives:
        raise SystemExit(f"no archives {prefix}.tar or {prefix}-*.tar")
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
    ap.add_argument("--only", nargs="+", help="pack: these networks (file stems) only")
    ap.add_argument("--redo", nargs="+", default=[], help="pack: stages left out of config.yaml (recompute them)")
    ap.add_argument("--single", action="store_true", help="pack: one archive for the whole run")
    a = ap.parse_args()
    if a.action == "pack":
        for p in pack(a.src, a.dst, a.only, a.redo, a.single):
            print(p, p.stat().st_size)
    else:
        unpack(a.src, a.dst)


if __name__ == "__main__":
    main()
