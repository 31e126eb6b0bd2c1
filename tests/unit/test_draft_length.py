"""Cost-sized n-gram proposals: what they learn, the length they pick, and that output is unchanged."""

import random

import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import NgramArm, NoDraftArm
from metasd_train.decoding.assemble import build_arms
from metasd_train.decoding.draft_length import AcceptanceByMatch, best_length
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models.random_init import tiny_llama

V = 32


def test_acceptance_counts_stop_at_the_first_mismatch():
    acc = AcceptanceByMatch()
    acc.update([5, 6, 7], 2, [5, 9, 7])  # token 0 accepted, token 1 rejected, token 2 never offered
    assert acc.counts == {(2, 0): [1.0, 1.0], (2, 1): [0.0, 1.0]}
    assert acc.rate(2, 0) == 2 / 3 and acc.rate(2, 1) == 1 / 3 and acc.rate(1, 0) == 0.5  # Beta(1, 1) prior
    assert acc.expected_accepted(2, 2) == [0.0, 2 / 3, 2 / 3 + 2 / 9]


def test_best_length_weighs_expected_tokens_against_verify_seconds():
    expected = [0.0, 0.9, 1.7, 2.4]  # a strong match
    flat = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    steep = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    assert best_length(expected, flat) == 3  # verify width is free: propose all
    assert best_length([0.0, 0.3, 0.4, 0.45], steep) == 0  # a weak match does not pay for its width
    assert best_length(expected, {1: 1.0}) == 3  # costs unknown: as "fixed"


def test_a_cost_sized_ngram_stops_proposing_what_is_always_rejected():
    arm = NgramArm("ngram", V, gamma=4, length="cost")
    arm.rt.width_seconds.update({1: 1.0, 2: 1.5, 3: 1.6, 4: 1.7, 5: 1.8})
    for _ in range(30):  # its 1-token matches are never what follows
        arm.rt.acceptance.update([7, 8], 1, [9, 9])
    host = [3, 4, 5, 3]  # trailing 1-gram "3" matches: it would propose [4, 5, 3]
    assert NgramArm("ngram", V, gamma=4).lookup(host, 4) == [4, 5, 3]
    seq = type("S", (), {"host": host, "length": len(host)})()
    assert arm._proposal(seq, 4) == []


def test_cost_sized_ngram_output_equals_greedy_generate_and_widths_are_timed():
    target = tiny_llama(V, layers=2, seed=3)
    arms = [NgramArm("ngram", V, gamma=6, length="cost"), NoDraftArm("none", V)]
    engine = SpecEngine(target, arms, SamplingParams(), eos_ids=[1])
    chooser, rng = BanditChooser(RandomArm(2, seed=1)), random.Random(2)
    for _ in range(15):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(2, 10))] * 2  # repeats: matches to size
        n = rng.randint(1, 20)
        out = target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=1, pad_token_id=1)
        assert engine.generate(prompt, n, chooser).tokens == out[0, len(prompt) :].tolist()
    assert sorted(engine.width_seconds) == list(range(1, engine.max_block + 1))
    assert engine.arms[0].rt.acceptance.counts  # it learned from the committed tokens


def test_manifests_without_a_length_build_a_fixed_ngram():
    target = tiny_llama(V, layers=1, seed=1)
    old, new = build_arms([], target, None, {"gamma": 3}), build_arms([], target, None, {"gamma": 5, "length": "cost"})
    assert (old[0].gamma, old[0].length, new[0].gamma, new[0].length) == (3, "fixed", 5, "cost")


def test_a_position_is_learned_once_however_often_it_is_asked():
    arm = NgramArm("ngram", V, gamma=4, length="cost")
    host = [3, 4, 5, 3]
    seq = type("S", (), {"host": host, "length": len(host)})()
    arm._proposal(seq, 4), arm._proposal(seq, 2)  # proposes() and draft() may ask with different k
    host += [4, 5, 3, 4]
    seq.length = len(host)
    arm._proposal(seq, 4)
    assert arm.rt.acceptance.counts[(1, 0)] == [1.0, 1.0]  # [4, 5, 3] at position 4, counted once
