"""The exact greedy log reproduces the engine's rounds for any fixed arm (model and n-gram)."""

import random

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm, RandomArm
from metasd_train.bandit.replay import by_request, play
from metasd_train.data.acceptance_log import arm_rows
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.models.drafters import tiny_llama, truncated

V = 32


@pytest.fixture(scope="module")
def setup():
    target = tiny_llama(V, layers=3, seed=1)
    arms = [
        ModelArm("trunc", truncated(target, 2), V, gamma=3),
        ModelArm("other", tiny_llama(V, 1, seed=5), V, gamma=2),
        NgramArm("ngram", V, gamma=3),
    ]
    return target, arms


def logged(arms, seq, prompt_len):
    rows = []
    for i, arm in enumerate(arms):
        for t, (k, n, d) in enumerate(arm_rows(arm, seq, prompt_len, "cpu")):
            rows.append(
                {
                    "request": 0,
                    "domain": "x",
                    "features": [],
                    "round": t,
                    "arm": i,
                    "drafted": k,
                    "accepted": n,
                    "divergence": d,
                    "efficiency": n / k if k else 0.0,
                }
            )
    return rows


def test_log_replay_reproduces_engine_rounds(setup):
    target, arms = setup
    engine = SpecEngine(target, arms, eos_ids=[])
    rng = random.Random(0)
    for _ in range(10):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(2, 8))] * 2
        for i in range(len(arms)):
            gen = engine.generate(prompt, 30, BanditChooser(FixedArm(len(arms), i)))
            rows = logged(arms, prompt + gen.tokens, len(prompt))
            req = by_request(rows)
            replayed = []
            t = 0
            while t < req[0]["length"]:
                r = req[0]["arms"][i][t]
                replayed.append((r["drafted"], r["accepted"]))
                t += r["accepted"] + 1
            assert replayed == [(r.drafted, r.accepted) for r in gen.rounds]


def test_replay_with_a_switching_policy_matches_the_engine(setup):
    target, arms = setup
    engine = SpecEngine(target, arms, eos_ids=[])
    prompt = [4, 9, 4, 9, 11, 4, 9]
    gen = engine.generate(prompt, 40, BanditChooser(RandomArm(len(arms), seed=3)))
    rows = logged(arms, prompt + gen.tokens, len(prompt))
    tokens, rounds = play(by_request(rows), lambda: RandomArm(len(arms), seed=3))
    assert (tokens["x"], rounds["x"]) == (len(gen.tokens), len(gen.rounds))
    assert torch.tensor([r.accepted for r in gen.rounds]).sum() > 0
