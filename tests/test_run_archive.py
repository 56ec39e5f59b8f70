"""benchmarks/run_archive.py: the trip of a GPU-trained run back to this machine (fp16, chosen networks)."""

import importlib.util
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

spec = importlib.util.spec_from_file_location(
    "run_archive", Path(__file__).parents[1] / "benchmarks" / "run_archive.py"
)
run_archive = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_archive)


def test_single_archive_keeps_the_networks_asked_for_and_leaves_stages_to_redo(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    weights = torch.randn(4, 4)
    save_file({"w": weights}, str(run / "denoiser.safetensors"))
    save_file({"w": torch.randn(8)}, str(run / "prior.safetensors"))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"method": "d3ad", "stages": {"denoiser": {"complete": True}, "prior": {"complete": True}}})
    )
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    written = run_archive.pack(run, tmp_path / "out" / "r", only=["denoiser"], redo=["prior"], single=True)
    assert [p.name for p in written] == ["r.tar"]
    run_archive.unpack(tmp_path / "out" / "r", tmp_path / "back")
    back = tmp_path / "back"
    assert sorted(p.name for p in back.iterdir()) == ["config.yaml", "denoiser.safetensors", "train_log.jsonl"]
    assert torch.allclose(load_file(str(back / "denoiser.safetensors"))["w"], weights, atol=1e-2)
    assert load_file(str(back / "denoiser.safetensors"))["w"].dtype == torch.float32
    assert yaml.safe_load((back / "config.yaml").read_text())["stages"] == {"denoiser": {"complete": True}}
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"]["prior"]  # the run itself is untouched
