"""Rewards from the engine's RoundRecord, and the chooser that computes them (chosen and idle arms)."""

import pytest

from metasd_train.bandit.chooser import BanditChooser, check_feedback
from metasd_train.bandit.policies import FixedArm, Policy
from metasd_train.bandit.rewards import Outcome, chosen_outcome, divergence, efficiency, idle_outcome, reward_fn, speed
from metasd_train.decoding.records import IdleScore, RoundRecord
from metasd_train.errors import UserError


def record(accepted=3, drafted=4, t_draft=0.2, t_verify=1.0, t_round=1.3, t_idle=0.0, t_bandit=0.0, idle=None):
    return RoundRecord(0, 0, "a", drafted, accepted, 0.7, t_draft, t_verify, t_idle, t_bandit, t_round, 1.0, 5,
                       True, idle or {})  # fmt: skip


def test_speed_is_the_speedup_over_the_target_alone_scaled_by_max_block():
    assert speed(Outcome(4, 4, 1.0, 1.0, 1.0, 5)) == 1.0  # a full block for one target step
    assert speed(Outcome(4, 1, 0.5, 1.0, 1.0, 5)) == pytest.approx(2 / 5)
    assert speed(Outcome(4, 4, 1.0, 2.0, 1.0, 5)) == pytest.approx(0.5)  # twice the time, half the reward
    assert speed(Outcome(0, 0, 0.0, 9.0, 1.0, 5)) == pytest.approx(1 / 5)  # no proposal: the target alone
    assert speed(Outcome(4, 0, 0.0, 2.0, 1.0, 5)) < 1 / 5  # drafting that paid nothing is worse than the target


def test_a_slower_verify_scores_lower():
    """The old throughput reward had t_verify in its numerator: a slower verify scored higher."""
    fast, slow = record(t_verify=1.0, t_round=1.3), record(t_verify=2.0, t_round=2.3)
    assert speed(chosen_outcome(slow)) < speed(chosen_outcome(fast))


def test_round_time_excludes_idle_scoring_and_the_bandit():
    rec = record(t_round=1.3 + 0.5 + 0.1, t_idle=0.5, t_bandit=0.1)
    assert chosen_outcome(rec).seconds == pytest.approx(1.3)


def test_idle_arm_is_charged_its_own_draft_cost():
    rec = record(t_draft=0.2, t_round=1.3)  # 1.1 s of verify and overhead
    score = IdleScore(drafted=3, accepted=3, divergence=1.0)
    assert idle_outcome(rec, score, 0.0).seconds == pytest.approx(1.1)
    assert idle_outcome(rec, score, 0.5).seconds == pytest.approx(2.6)
    assert speed(idle_outcome(rec, score, 0.5)) < speed(idle_outcome(rec, score, 0.0))


def test_paper_rewards_give_nothing_without_a_proposal():
    empty = Outcome(0, 0, 0.9, 1.0, 1.0, 5)
    assert divergence(empty) == 0.0 and efficiency(empty) == 0.0
    assert efficiency(Outcome(4, 3, 0.9, 1.0, 1.0, 5)) == 0.75


def test_unknown_reward_and_feedback_are_user_errors():
    with pytest.raises(UserError, match="speed, divergence, efficiency"):
        reward_fn("throughput")
    with pytest.raises(UserError, match="bandit, full"):
        check_feedback("ful")
    with pytest.raises(UserError, match="bandit.feedback"):
        BanditChooser(FixedArm(2), feedback="typo")


class Recorder(Policy):
    def __init__(self, n_arms):
        super().__init__(n_arms)
        self.seen = []

    def select(self, x=None):
        return 0

    def observe(self, rewards, chosen, x=None):
        self.seen.append(dict(rewards))


def test_full_feedback_scores_idle_arms_on_the_same_footing():
    idle = {1: IdleScore(4, 3, 0.8), 2: IdleScore(4, 0, 0.1)}
    rec = record(accepted=3, t_draft=0.2, t_round=1.3, idle=idle)
    full, bandit = Recorder(3), Recorder(3)
    BanditChooser(full, "speed", feedback="full").observe(None, rec)
    BanditChooser(bandit, "speed", feedback="bandit").observe(None, rec)
    assert set(bandit.seen[0]) == {0}
    r = full.seen[0]
    assert set(r) == {0, 1, 2}
    # arm 1 accepted as many as the chosen arm and has not drafted yet (assumed free): it scores higher
    assert r[1] > r[0] > r[2]


def test_draft_cost_is_learned_from_rounds_where_the_arm_drafted():
    policy = Recorder(2)
    chooser = BanditChooser(policy, "speed", feedback="full")
    chooser.observe(None, record(t_draft=0.4, drafted=4))
    assert chooser.costs.per_token(0) == pytest.approx(0.1)
    assert chooser.costs.per_token(1) == 0.0  # the documented prior: free until it drafts


def test_a_rounds_commit_counts_towards_its_speed_reward_not_as_idle_scoring():
    """The sync and commit every round pays are the chosen arm's cost: the speed reward leaves out
    idle scoring and the bandit's time only, so commit must not be booked as idle."""
    import time

    from metasd_train.bandit.chooser import BanditChooser
    from metasd_train.bandit.policies import FixedArm
    from metasd_train.bandit.rewards import round_seconds
    from metasd_train.decoding.arms import NgramArm
    from metasd_train.decoding.engine import SpecEngine
    from metasd_train.models.random_init import tiny_llama

    arm = NgramArm("ngram", 32, gamma=3)
    commit = arm.commit
    arm.commit = lambda n: (time.sleep(0.005), commit(n))  # a slow commit
    engine = SpecEngine(tiny_llama(32, layers=2, seed=1), [arm], eos_ids=[])
    rounds = engine.generate([4, 9, 4, 9, 11, 4, 9], 6, BanditChooser(FixedArm(1, 0))).rounds
    assert all(r.t_idle < 0.002 for r in rounds)
    assert all(round_seconds(r) - r.t_draft - r.t_verify >= 0.005 for r in rounds)
