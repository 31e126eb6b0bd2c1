"""`trainer.devices=2` on CPU (gloo): the same command runs every stage in two processes, and the
sharded stages (data generation, acceptance logging) write what one process writes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = ("t_draft", "t_verify", "t_other", "t_step", "throughput")  # measured per run, not part of the result


def train(run_dir: Path, *overrides: str) -> None:
    cmd = [sys.executable, "train.py", "recipe=tiny", f"run_dir={run_dir}", "trainer.accelerator=cpu", *overrides]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)


def rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in datasets.load_from_disk(str(path)).to_list()]


def test_two_processes_write_what_one_writes(tmp_path):
    train(tmp_path / "one")
    train(tmp_path / "two", "trainer.devices=2")
    for part in ("data/prompts", "data/examples", "log_acceptance/rounds"):
        assert rows(tmp_path / "two" / part) == rows(tmp_path / "one" / part), part
    throughput = json.loads((tmp_path / "two/distill/throughput.json").read_text())
    assert throughput["generalist"]["world_size"] == 2
    assert (tmp_path / "two/export/ensemble.json").is_file()
    one = json.loads((tmp_path / "one/distill/acceptance.json").read_text())["generalist"]
    two = json.loads((tmp_path / "two/distill/acceptance.json").read_text())["generalist"]
    assert one.keys() == two.keys() and all(abs(one[d]["acceptance"] - two[d]["acceptance"]) < 0.05 for d in one)


def checkpoint_step(run_dir: Path, name: str = "generalist") -> int:
    return int(torch.load(run_dir / ".checkpoints" / name / "last.ckpt", weights_only=True)["global_step"])


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_checkpoint_resumes_on_another_process_count(tmp_path, first, then):
    """A distill run cut after 4 steps on `first` processes goes on from step 4 on `then` processes."""
    run = tmp_path / "run"
    base = ["stages=[data,distill]", "drafter.specialists=none"]
    train(run, *base, f"trainer.devices={first}", "distill.max_steps=4")
    assert checkpoint_step(run) == 4
    shutil.rmtree(run / "distill")  # the stage output goes; the checkpoint stays, as after a kill
    train(run, *base, f"trainer.devices={then}", "distill.max_steps=8")
    assert checkpoint_step(run) == 8
    resumed = json.loads((run / "distill/throughput.json").read_text())["generalist"]
    fresh = tmp_path / "fresh"
    train(fresh, *base, f"trainer.devices={then}", "distill.max_steps=8")
    full = json.loads((fresh / "distill/throughput.json").read_text())["generalist"]
    assert resumed["world_size"] == full["world_size"] == then
    assert 0.3 < resumed["tokens"] / full["tokens"] < 0.7  # only steps 5..8 ran after the resume
    assert (run / "distill/generalist/model.safetensors").is_file()
