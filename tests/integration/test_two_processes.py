"""`trainer.devices=2` on CPU (gloo): the same command runs every stage in two processes, and the
sharded stages (data generation, acceptance logging) write what one process writes."""

import json
import subprocess
import sys
from pathlib import Path

import datasets

ROOT = Path(__file__).resolve().parents[2]
TIMINGS = ("t_draft", "t_verify", "throughput")  # measured per run, not part of the result


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
