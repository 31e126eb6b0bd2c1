"""Sleeping arms: an arm with nothing to propose sits the round out, and the n-gram index is exact."""

import random
from types import SimpleNamespace

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import make_policy
from metasd_train.bandit.replay import asleep_at
from metasd_train.bandit.warmstart import on_policy
from metasd_train.decoding.arms import ModelArm, NgramArm, NgramIndex, NoDraftArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.records import RoundRecord
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_llama

V = 32


@pytest.mark.parametrize("sizes", [(1, 3), (2, 4), (1, 1)])
def test_the_ngram_index_equals_the_scan_as_the_sequence_grows(sizes):
    rng = random.Random(sum(sizes))
    arm = NgramArm("ngram", V, gamma=4, min_ngram=sizes[0], max_ngram=sizes[1])
    for _ in range(20):
        host, index = [], NgramIndex(*sizes)
        for _ in range(rng.randint(1, 60)):
            host.extend(rng.randrange(6) for _ in range(rng.randint(1, 3)))
            k = rng.randint(1, 5)
            assert index.lookup(host, k) == arm.lookup(host, k)


def test_the_index_starts_over_on_another_sequence():
    index = NgramIndex(1, 3)
    assert index.lookup([1, 2, 3, 1], 2) == [2, 3]
    assert index.lookup([5, 6, 5], 2) == [6, 5]  # a new list: nothing of the first one is reused


@pytest.mark.parametrize("name", ["ucb_elim", "ucb", "thompson", "hedge", "exp3", "random", "linucb"])
def test_sleeping_policies_never_choose_an_asleep_arm(name):
    policy = make_policy(name, 3, {"seed": 1}, dim=2)
    x = torch.ones(2, dtype=torch.float64)
    for t in range(200):
        asleep = frozenset({2}) if t % 2 else frozenset({0, 1})
        arm = policy.select(x, asleep)
        assert arm not in asleep
        policy.observe({arm: 0.9 if arm == 2 else 0.3}, arm, x)
    assert policy.select(x, frozenset({0, 1, 2})) in (0, 1, 2)  # all asleep: any arm


def test_an_arm_judged_on_its_awake_rounds_does_not_eliminate_the_others():
    policy = make_policy("ucb_elim", 2)
    for t in range(400):
        asleep = frozenset({1}) if t % 2 else frozenset()
        arm = policy.select(None, asleep)
        policy.observe({arm: 0.9 if arm == 1 else 0.4}, arm)
    assert policy.alive.tolist() == [1.0, 1.0]  # arm 1 (the sleeper) wins when awake, arm 0 plays the rest
    assert policy.select(None, frozenset({1})) == 0 and policy.select(None) == 1


@pytest.fixture(scope="module")
def target():
    return tiny_llama(V, layers=2, seed=4)


def test_a_sleeping_chooser_never_plays_an_empty_round_and_stays_lossless(target):
    arms = [NgramArm("ngram", V, gamma=3), ModelArm("trunc", truncated(target, 1), V, gamma=3)]
    engine = SpecEngine(target, arms, eos_ids=[1], fast=True, max_len=96)
    chooser = BanditChooser(make_policy("ucb_elim", 2), sleeping=True)
    rng, ngram_rounds = random.Random(0), 0
    for _ in range(8):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(2, 10))] * 2
        gen = engine.generate(prompt, 24, chooser)
        ref = target.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=24, eos_token_id=1, pad_token_id=1
        )
        assert gen.tokens == ref[0, len(prompt) :].tolist()
        for r in gen.rounds:
            ngram_rounds += r.arm == 0
            assert r.drafted > 0 or not r.could_draft  # the model arm is always awake, so no round is empty
    assert ngram_rounds > 0


def test_without_sleeping_the_ngram_arm_can_waste_a_round(target):
    engine = SpecEngine(target, [NgramArm("ngram", V, gamma=3), NoDraftArm("none", V)], fast=True, max_len=64)
    gen = engine.generate(
        [2, 3, 4, 5, 6], 8, BanditChooser(make_policy("fixed", 2, {"fixed_arm": "ngram"}, arm_names=["ngram", "none"]))
    )
    assert any(r.drafted == 0 for r in gen.rounds)


def _log(rows):
    return {0: {"domain": "d", "features": [], "length": 3, "arms": {a: dict(enumerate(rs)) for a, rs in rows.items()}}}


def _row(drafted, accepted):
    return {"drafted": drafted, "accepted": accepted, "divergence": 0.5, "t_draft": 0.0, "t_verify": 1.0,
            "t_step": 1.0, "max_block": 4}  # fmt: skip


def test_the_replay_and_the_warm_start_skip_the_rounds_an_arm_sleeps():
    req = _log({0: [_row(3, 1), _row(3, 1), _row(3, 0)], 1: [_row(0, 0), _row(3, 3), _row(0, 0)]})
    assert asleep_at(req[0], 0) == frozenset({1}) and asleep_at(req[0], 1) == frozenset()
    assert asleep_at(req[0], 2) == frozenset()  # the last position cannot draft: nobody sleeps
    awake = {s.arm: s.n for s in on_policy(req, 2, "speed", sleeping=True)}
    every = {s.arm: s.n for s in on_policy(req, 2, "speed", sleeping=False)}
    assert awake[1] < every[1] and awake[0] == every[0]


def test_a_sleeping_chooser_learns_nothing_from_an_empty_round():
    chooser = BanditChooser(make_policy("ucb_elim", 2), sleeping=True)
    chooser.observe(None, RoundRecord(0, 0, "a", 0, 0, 0.0, 0.0, 1e-3, 0.0, 0.0, 1e-3, 1e-3, 4))
    assert chooser.policy.counts.sum() == 0


def test_policies_that_ignore_sleep_still_learn_from_empty_rounds():
    chooser = BanditChooser(make_policy("seqhalving", 2, {"budget": 4}), sleeping=True)
    assert not chooser.sleeping
    arms = []
    for _ in range(4):  # halving moves on only by observing: an ignored empty round must still count
        arm = chooser.select(None)
        arms.append(arm)
        chooser.observe(None, RoundRecord(0, arm, "a", 0, 0, 0.0, 0.0, 1e-3, 0.0, 0.0, 1e-3, 1e-3, 4))
    assert set(arms) == {0, 1}


def test_a_warm_sleeper_does_not_eliminate_the_arms_that_play_its_empty_rounds():
    policy = make_policy("ucb_elim", 3)
    policy.set_prior(torch.full((3,), 200.0), torch.tensor([100.0, 98.0, 180.0]))  # arm 2: the n-gram when awake
    chooser = BanditChooser(policy, sleeping=True)
    chooser.begin(SimpleNamespace(features=None, sleepers=frozenset({2})))
    assert chooser.select(None) == 2  # nothing asleep yet: the n-gram plays
    assert policy.alive.tolist() == [1.0, 1.0, 1.0]  # and rules out neither model arm
    assert chooser.select(None, frozenset({2})) == 0
