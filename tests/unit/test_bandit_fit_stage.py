"""Stage fit_bandit on a synthetic acceptance log (no models): outputs, reward ranking, errors."""

import json
import random
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
from omegaconf import OmegaConf

from metasd_train.bandit.persist import load_bandit
from metasd_train.config import BanditConfig
from metasd_train.errors import UserError
from metasd_train.pipeline import stage_fit_bandit

ARMS = (("slow_good", 4, 0.7, 0.3), ("free_bursty", 4, 0.5, 0.0), ("bad", 2, 0.2, 0.1))  # name, γ, accept, cost


def synthetic_rows(requests=6, length=40, seed=0) -> list[dict]:
    """A full-information log: every arm at every position of each request, with per-arm timings."""
    rng, rows = random.Random(seed), []
    for req in range(requests):
        domain = ("a", "b")[req % 2]
        for arm, (name, gamma, p, cost) in enumerate(ARMS):
            for pos in range(length):
                k = min(gamma, length - pos - 1)
                n = next((i for i in range(k) if rng.random() > p), k)
                rows.append({
                    "request": req, "domain": domain, "features": [1.0, float(req % 2)], "round": pos, "arm": arm,
                    "arm_name": name, "drafted": k, "accepted": n, "divergence": n / k if k else 0.0,
                    "t_draft": cost * k, "t_verify": 1.0, "t_step": 1.0, "max_block": 5,
                })  # fmt: skip
    return rows


class FakeRun:
    def __init__(self, path: Path):
        self.path = path

    def require(self, stage: str) -> Path:
        return self.path / stage

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage


def context(tmp_path, **bandit) -> SimpleNamespace:
    datasets.Dataset.from_list(synthetic_rows()).save_to_disk(str(tmp_path / "log_acceptance" / "rounds"))
    cfg = OmegaConf.create({"bandit": {**OmegaConf.to_container(OmegaConf.structured(BanditConfig)), **bandit}})
    return SimpleNamespace(cfg=cfg, run=FakeRun(tmp_path), log=lambda *a: None)


def test_fit_bandit_writes_its_outputs_and_ranks_rewards(tmp_path):
    ctx = context(tmp_path, policy="ucb_elim", reward="speed", context_dim=3)
    summary = stage_fit_bandit.run(ctx)
    out = tmp_path / "fit_bandit"
    for f in ("bandit.safetensors", "bandit.json", "replay.json", "replay_tau.png", "reward_separation.png"):
        assert (out / f).exists(), f
    report = json.loads((out / "replay.json").read_text())
    timed = report["timed"]
    assert {"ucb_elim (warm, paper)", "ucb_elim (warm, persistent)", "oracle (per domain)"} <= set(timed["scores"])
    assert set(timed["reward_ranking"]) == {"speed", "divergence", "efficiency"}
    # the speed reward ranks arms as their replayed tokens/s do; the others need not
    assert timed["reward_ranking"]["speed"]["all"] == pytest.approx(1.0)
    assert set(report["deterministic"]["tau"]) == {f"fixed:{a[0]}" for a in ARMS}
    policy, _, meta = load_bandit(out)
    assert meta["policy"] == "ucb_elim" and policy.prior[0].sum() > 0  # warm-started
    assert summary["over_best_fixed"] > 0.9


def test_a_misspelled_fixed_arm_is_a_user_error(tmp_path):
    ctx = context(tmp_path, policy="fixed", fixed_arm="free_bursti")
    with pytest.raises(UserError, match="free_bursti.*slow_good, free_bursty, bad"):
        stage_fit_bandit.run(ctx)


def test_fixed_arm_by_name_is_exported(tmp_path):
    stage_fit_bandit.run(context(tmp_path, policy="fixed", fixed_arm="bad"))
    policy, _, _ = load_bandit(tmp_path / "fit_bandit")
    assert policy.select() == 2
