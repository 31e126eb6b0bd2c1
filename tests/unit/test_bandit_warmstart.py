"""Warm start from a hand-written acceptance log: on-policy pseudo-counts, LinUCB's per-arm widths."""

import pytest
import torch

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import UCB, EliminationUCB, LinUCB
from metasd_train.bandit.replay import by_request
from metasd_train.bandit.warmstart import on_policy, warm_start


def row(request, arm, pos, drafted, accepted, domain="d"):
    return {
        "request": request, "domain": domain, "features": [1.0, float(request)], "round": pos, "arm": arm,
        "arm_name": f"a{arm}", "drafted": drafted, "accepted": accepted, "divergence": 0.5,
        "t_draft": 0.1 * drafted, "t_verify": 1.0, "t_step": 1.0, "max_block": 4,
    }  # fmt: skip


def tiny_log() -> dict[int, dict]:
    """Request 0 has 6 new tokens. Arm 0 (γ 3) accepts 2 from position 0, then 2 of 2 from position 3;
    arm 1 (γ 1) never. Every position is logged for both arms, as the real log does."""
    rows = []
    for pos in range(6):
        room = 6 - pos - 1
        rows.append(row(0, 0, pos, min(3, room), min(2, room)))
        rows.append(row(0, 1, pos, min(1, room), 0))
    return by_request(rows)


def test_pseudo_counts_are_one_per_round_actually_played():
    stats = {(s.request, s.arm): s for s in on_policy(tiny_log(), 2, "efficiency")}
    # arm 0 plays positions 0 and 3 (2 rounds, not 6 start positions); efficiency 2/3 then 2/2
    assert (stats[0, 0].n, stats[0, 0].sum, stats[0, 0].sumsq) == pytest.approx((2, 5 / 3, 4 / 9 + 1))
    # arm 1 plays positions 0..5; the last could not draft, so 5 observations of 0
    assert (stats[0, 1].n, stats[0, 1].sum) == (5, 0.0)


def test_ucb_prior_equals_hand_computed_pseudo_counts():
    ucb = UCB(2)
    warm_start(ucb, tiny_log(), "speed", weight=0.5)
    # speed: (accepted + 1) * t_step / (t_draft + t_verify) / max_block
    r0 = [3 / 1.3 / 4, 3 / 1.2 / 4]
    r1 = [1 / 1.1 / 4] * 5
    expected = torch.tensor(
        [[2, 5], [sum(r0), sum(r1)], [sum(r * r for r in r0), sum(r * r for r in r1)]], dtype=torch.float64
    )
    torch.testing.assert_close(ucb.prior, 0.5 * expected)
    torch.testing.assert_close(ucb.stats, 0.5 * expected)
    assert ucb.t == pytest.approx(3.5)
    ucb.update(1, 1.0)
    ucb.reset()
    torch.testing.assert_close(ucb.stats, 0.5 * expected)  # reset returns to the prior, not to zero


def test_no_weight_means_no_prior():
    policy = EliminationUCB(2)
    warm_start(policy, tiny_log(), "speed", weight=0.0)
    assert policy.counts.sum() == 0


def test_linucb_prior_keeps_each_arms_own_uncertainty():
    feat = Featurizer(hidden_size=2, dim=3, seed=0)
    policy = LinUCB(2, dim=3, beta=1.0)
    warm_start(policy, tiny_log(), "efficiency", weight=1.0, featurizer=feat)
    x = feat(torch.tensor([1.0, 0.0], dtype=torch.float64))
    widths = torch.einsum("i,kij,j->k", x, policy.A_inv, x).sqrt()
    assert widths[0] > widths[1]  # arm 0 played 2 rounds, arm 1 five: arm 0 stays less certain
    torch.testing.assert_close(policy.prior_A_inv, policy.A_inv)
    policy.update(0, 1.0, x)
    policy.reset()
    torch.testing.assert_close(policy.prior_A_inv, policy.A_inv)
