"""The exact greedy log reproduces the engine's rounds: for any fixed arm (model and n-gram), and for
a policy that learns from rewards, round by round (choices, drafted, accepted)."""

import random

import pytest

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import UCB, FixedArm
from metasd_train.bandit.replay import by_request, walk
from metasd_train.data.acceptance_log import LogTiming, arm_rows, request_rows
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_llama

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


def logged(target, arms, seq, prompt_len):
    """The log's rows for one request (timings made up: they do not enter τ or the efficiency reward)."""
    timing = LogTiming(t_step=1.0, t_verify=1.1, max_block=4, t_token=[0.2, 0.1, 0.0])
    blocks = [arm_rows(arm, seq, prompt_len, target) for arm in arms]
    return by_request(request_rows(0, "x", [], arms, blocks, timing))[0]


def test_log_replay_reproduces_engine_rounds(setup):
    target, arms = setup
    engine = SpecEngine(target, arms, eos_ids=[])
    rng = random.Random(0)
    for _ in range(10):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(2, 8))] * 2
        for i in range(len(arms)):
            gen = engine.generate(prompt, 30, BanditChooser(FixedArm(len(arms), i)))
            replayed = walk(
                logged(target, arms, prompt + gen.tokens, len(prompt)), BanditChooser(FixedArm(len(arms), i))
            )
            assert [(r.drafted, r.accepted) for r in replayed] == [(r.drafted, r.accepted) for r in gen.rounds]


def test_replay_of_a_reward_driven_policy_matches_the_engine_round_by_round(setup):
    """UCB reads every reward, so one wrong reward in the replay changes its later choices. (Block
    divergence is not exact in the log past a rejection, where the log teacher-forces; efficiency and
    the speed reward's token counts are.)"""
    reward = "efficiency"
    target, arms = setup
    engine = SpecEngine(target, arms, eos_ids=[])
    prompt = [4, 9, 4, 9, 11, 4, 9]
    gen = engine.generate(prompt, 60, BanditChooser(UCB(len(arms), beta=0.3), reward))
    replayed = walk(
        logged(target, arms, prompt + gen.tokens, len(prompt)), BanditChooser(UCB(len(arms), beta=0.3), reward)
    )
    ours = [(r.arm, r.drafted, r.accepted) for r in replayed]
    assert ours == [(r.arm, r.drafted, r.accepted) for r in gen.rounds]
    assert len({r.arm for r in gen.rounds}) == len(arms) and sum(r.accepted for r in gen.rounds) > 0


def test_replayed_rounds_cost_draft_verify_and_the_arms_measured_rest(setup):
    """A round's replayed seconds = draft + verify + the rest its arm measured on the engine's rounds
    (host work): without that rest, a cheap-to-draft arm looks faster than it decodes."""
    target, arms = setup
    timing = LogTiming(t_step=1.0, t_verify=1.1, max_block=4, t_token=[0.2, 0.1, 0.0], t_other=[0.3, 0.4, 0.5])
    seq = [4, 9, 4, 9, 11, 4, 9, 4, 9, 11]
    blocks = [arm_rows(arm, seq, 4, target) for arm in arms]
    req = by_request(request_rows(0, "x", [], arms, blocks, timing))[0]
    for i in range(len(arms)):
        for r in walk(req, BanditChooser(FixedArm(len(arms), i))):
            assert r.t_round == pytest.approx(timing.t_token[i] * r.drafted + 1.1 + timing.t_other[i])


def test_round_costs_count_a_round_as_the_speed_reward_does_without_the_catch_up_round():
    from metasd_train.decoding.records import RoundRecord
    from metasd_train.pipeline.stage_log_acceptance import round_costs

    def rec(drafted, t_draft, t_round, t_idle=0.0, t_bandit=0.0):
        return RoundRecord(0, 0, "a", drafted, 0, 0.0, t_draft, 1.0, t_idle, t_bandit, t_round, 1.0, 4)

    catch_up = rec(3, 9.0, 10.5)  # the first round drafts after catching up on the prompt
    rounds = [catch_up, rec(3, 0.6, 1.9, t_idle=0.1, t_bandit=0.1), rec(1, 0.2, 1.6)]
    per_token, rest = round_costs(rounds)
    assert per_token == pytest.approx(0.8 / 4)
    assert rest == pytest.approx(((1.9 - 0.2 - 0.6 - 1.0) + (1.6 - 0.2 - 1.0)) / 2)  # idle + bandit left out
    assert round_costs([rec(0, 0.01, 1.2), rec(0, 0.01, 1.3)])[0] is None  # drafted nothing: no per-token cost


def test_arm_costs_come_from_the_engine_rounds(setup):
    from metasd_train.pipeline.stage_log_acceptance import arm_costs

    target, arms = setup
    engine = SpecEngine(target, arms, eos_ids=[])
    per_token, other = arm_costs(engine, [4, 9, 4, 9, 11, 4, 9], 12)
    assert len(per_token) == len(other) == len(arms)
    assert per_token[0] > 0 and per_token[1] > 0 and all(o >= 0 for o in other)
    assert arm_costs(engine, [4, 9, 4, 9, 11, 4, 9], 1)[0][0] > 0  # no round drafted: the timed step
