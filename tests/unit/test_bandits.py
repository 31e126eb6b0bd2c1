"""Policies on synthetic environments over T = 10,000 rounds: regret, warm start, persistence, seeds,
paper-mode definitions, and configuration errors."""

import math

import pytest
import torch

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.persist import load_bandit, save_bandit
from metasd_train.bandit.policies import (
    EXP3,
    POLICIES,
    UCB,
    EliminationUCB,
    FixedArm,
    Hedge,
    LinUCB,
    RandomArm,
    SequentialHalving,
    Thompson,
    make_policy,
)
from metasd_train.errors import UserError

T = 10_000
MEANS = torch.tensor([0.30, 0.55, 0.70, 0.50])


def run(policy, reward_fn, mean_fn, T=T, x_fn=None, seed=0):
    """Play T rounds; return the cumulative pseudo-regret curve [T]."""
    gen = torch.Generator().manual_seed(seed)
    regret = torch.zeros(T, dtype=torch.float64)
    total = 0.0
    for t in range(T):
        x = x_fn(t, gen) if x_fn else None
        arm = policy.select(x)
        means = mean_fn(t, x)
        total += float(means.max() - means[arm])
        regret[t] = total
        policy.update(arm, float(reward_fn(t, arm, x, gen)), x)
    return regret


def bernoulli(t, arm, x, gen):
    return torch.bernoulli(MEANS[arm : arm + 1], generator=gen)[0]


def beta(t, arm, x, gen):
    """Beta(4 mean, 4 (1 - mean)) rewards, drawn T at a time per arm (one draw a round is slow)."""
    if t == 0:
        BETA_DRAWS.clear()
    if arm not in BETA_DRAWS:
        a = MEANS[arm] * 4
        BETA_DRAWS[arm] = torch.distributions.Beta(a, 4 - a).sample((T,)).tolist()
    return BETA_DRAWS[arm][t]


BETA_DRAWS: dict[int, list[float]] = {}


def stationary(t, x):
    return MEANS


def exp3_gamma(K=4):
    return min(1.0, math.sqrt(K * math.log(K) / ((math.e - 1) * T)))


BUILDERS = {
    "ucb": lambda: UCB(4, beta=1.0),
    "thompson": lambda: Thompson(4, sigma=0.5),
    "seqhalving": lambda: SequentialHalving(4, budget=1000),
    "exp3": lambda: EXP3(4, gamma=exp3_gamma()),
    "ucb_elim": lambda: EliminationUCB(4),
}
# EXP3 with a horizon-tuned gamma is O(sqrt T) only up to its floor
SUBLINEAR = {"ucb", "thompson", "seqhalving", "ucb_elim"}


@pytest.mark.parametrize("reward", [bernoulli, beta], ids=["bernoulli", "beta"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_regret_far_below_random(name, reward):
    torch.manual_seed(0)
    regret = run(BUILDERS[name](), reward, stationary)
    random_regret = run(RandomArm(4), reward, stationary)
    if name == "exp3":  # Auer et al. (2002), Cor. 3.2: regret <= 2.63 sqrt(T K ln K) with the tuned gamma
        assert regret[-1] < min(2.63 * math.sqrt(T * 4 * math.log(4)), 0.3 * random_regret[-1])
    else:
        assert regret[-1] < 0.2 * random_regret[-1]
    if name in SUBLINEAR:
        assert regret[-1] / T < 0.3 * regret[T // 10 - 1] / (T // 10)  # average regret keeps falling


def test_random_policy_regret_is_linear():
    """Guards the harness itself: a policy that learns nothing must not look sub-linear."""
    regret = run(RandomArm(4), bernoulli, stationary)
    assert regret[-1] / T > 0.8 * regret[T // 10 - 1] / (T // 10)


def test_exp3_share_tracks_a_piecewise_stationary_switch():
    switched = MEANS.flip(0)

    def means(t, x):
        return MEANS if t < T // 2 else switched

    def reward(t, arm, x, gen):
        return torch.bernoulli(means(t, x)[arm : arm + 1], generator=gen)[0]

    shared = run(EXP3(4, gamma=0.05, share=0.001), reward, means)
    plain = run(EXP3(4, gamma=0.05), reward, means)
    random_regret = run(RandomArm(4), reward, means)[-1]
    assert shared[-1] < 0.5 * random_regret
    assert run(UCB(4), reward, means)[-1] < 0.5 * random_regret
    # after the switch, fixed share recovers where plain EXP3's saturated weights hold it back
    assert shared[-1] - shared[T // 2 - 1] < 0.7 * (plain[-1] - plain[T // 2 - 1])


D, K = 6, 3
THETA = torch.tensor(
    [[0.8, 0.3, -0.4, 0, 0, 0], [0.5, -0.3, 0.4, 0.1, 0, 0], [0.6, 0, 0, 0.4, -0.3, 0]], dtype=torch.float64
)


def context(t, gen):
    x = torch.randn(D, generator=gen, dtype=torch.float64)
    x[0] = 1.0
    x[1:] /= x[1:].norm()
    return x


def linear_means(t, x):
    return THETA @ x


def linear_reward(t, arm, x, gen):
    return float(THETA[arm] @ x) + 0.1 * float(torch.randn(1, generator=gen))


def test_linucb_learns_context_and_beats_ucb():
    regret = run(LinUCB(K, D, beta=0.5), linear_reward, linear_means, x_fn=context)
    assert regret[-1] < 0.1 * run(RandomArm(K), linear_reward, linear_means, x_fn=context)[-1]
    assert regret[-1] < 0.5 * run(UCB(K), linear_reward, linear_means, x_fn=context)[-1]
    assert regret[-1] / T < 0.3 * regret[T // 10 - 1] / (T // 10)


def full_information_log(n, seed):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.stack([context(0, gen) for _ in range(n)])
    xs_rep = xs.repeat_interleave(K, 0)
    arms = torch.arange(K).repeat(n)
    rewards = torch.stack([torch.tensor(linear_reward(0, int(a), x, gen)) for a, x in zip(arms, xs_rep)])
    return xs_rep, arms, rewards


def test_warm_start_lowers_early_regret():
    cold, warm = [], []
    for seed in range(5):
        c = LinUCB(K, D, beta=0.5)
        w = LinUCB(K, D, beta=0.5)
        w.fit(*full_information_log(200, seed=100 + seed), 1.0)
        cold.append(run(c, linear_reward, linear_means, T=100, x_fn=context, seed=seed)[-1])
        warm.append(run(w, linear_reward, linear_means, T=100, x_fn=context, seed=seed)[-1])
    assert sum(warm) < 0.5 * sum(cold)


def test_linucb_fit_equals_sequential_updates():
    xs, arms, rewards = full_information_log(50, seed=0)
    a, b = LinUCB(K, D), LinUCB(K, D)
    a.fit(xs, arms, rewards)
    for x, k, r in zip(xs, arms, rewards):
        b.update(int(k), float(r), x)
    torch.testing.assert_close(a.A_inv, b.A_inv)
    torch.testing.assert_close(a.b, b.b)


def test_linucb_cached_scores_equal_the_ridge_formula():
    """Scores cached per context and rescored per updated arm equal theta.x + beta*sqrt(x A^-1 x) from scratch."""
    gen = torch.Generator().manual_seed(1)
    policy = LinUCB(K, D, beta=0.7)
    for _request in range(6):
        x = torch.randn(D, generator=gen, dtype=torch.float64)  # a new context tensor per request
        for _ in range(15):
            arm = policy.select(x)
            policy.update(arm, float(torch.rand((), generator=gen)), x)
            theta = torch.einsum("kij,kj->ki", policy.A_inv, policy.b)
            width = torch.einsum("i,kij,j->k", x, policy.A_inv, x).sqrt()
            expected = theta @ x + 0.7 * width
            torch.testing.assert_close(torch.from_numpy(policy._scores), expected)
            torch.testing.assert_close(policy.scores(x), expected)
        assert policy.select(x) == int(torch.argmax(expected))


def play_on(policy, feat, gen, rounds):
    """Choices of `policy` over `rounds` rounds of a contextual environment driven by `gen`."""
    choices = []
    for t in range(rounds):
        x = feat(torch.randn(10, generator=gen))
        arm = policy.select(x)
        choices.append(arm)
        policy.update(arm, linear_reward(t, arm, x, gen), x)
    return choices


@pytest.mark.parametrize("name", sorted(set(POLICIES) - {"fixed"}))
def test_a_saved_then_loaded_policy_chooses_as_the_original_would(tmp_path, name):
    cfg = {"seed": 3, "budget": 60}
    policy = make_policy(name, K, cfg, dim=D)
    feat = Featurizer(hidden_size=10, dim=D, seed=4)
    play_on(policy, feat, torch.Generator().manual_seed(0), 45)  # mid-phase for Sequential Halving
    save_bandit(tmp_path, policy, name, ["a", "b", "c"], cfg, feat)
    loaded, feat2, meta = load_bandit(tmp_path)
    assert meta["arms"] == ["a", "b", "c"] and type(loaded) is type(policy)
    torch.testing.assert_close(feat2.proj, feat.proj)
    after = [play_on(p, f, torch.Generator().manual_seed(1), 200) for p, f in ((policy, feat), (loaded, feat2))]
    assert after[0] == after[1]


def test_sequential_halving_state_keeps_survivors_and_queue(tmp_path):
    sh = SequentialHalving(5, budget=40)
    for _ in range(17):  # into its second phase
        arm = sh.select()
        sh.update(arm, 0.9 if arm == 3 else 0.1)
    assert len(sh.alive) == 3  # ceil(5 / 2)
    save_bandit(tmp_path, sh, "seqhalving", list("abcde"), {"budget": 40})
    loaded, _, _ = load_bandit(tmp_path)
    assert (loaded.alive, loaded.queue) == (sh.alive, sh.queue)


def test_fixed_arm_by_name_survives_save_and_load(tmp_path):
    names = ["generalist", "code", "ngram"]
    policy = make_policy("fixed", 3, {"fixed_arm": "ngram"}, arm_names=names)
    assert policy.select() == 2
    save_bandit(tmp_path, policy, "fixed", names, {"fixed_arm": "ngram"})
    loaded, _, _ = load_bandit(tmp_path)
    assert isinstance(loaded, FixedArm) and loaded.select() == 2
    assert load_bandit(tmp_path, keep_prior=False)[0].select() == 2


def test_configuration_mistakes_are_user_errors():
    with pytest.raises(UserError, match="bandit.fixed_arm='ngarm'.*generalist, code, ngram"):
        make_policy("fixed", 3, {"fixed_arm": "ngarm"}, arm_names=["generalist", "code", "ngram"])
    with pytest.raises(UserError, match="needs bandit.fixed_arm"):
        make_policy("fixed", 3, {}, arm_names=["generalist", "code", "ngram"])
    with pytest.raises(UserError, match="bandit.policy='greedy'.*ucb_elim"):
        make_policy("greedy", 3)
    with pytest.raises(UserError, match="bandit.ridge=0.0 .*> 0"):
        make_policy("linucb", 3, {"ridge": 0.0})
    with pytest.raises(UserError, match="bandit.exp3_gamma"):
        make_policy("exp3", 3, {"exp3_gamma": 0.0})


def test_corrupt_bandit_files_name_the_folder(tmp_path):
    save_bandit(tmp_path, UCB(3), "ucb", ["a", "b", "c"], {})
    (tmp_path / "bandit.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserError, match=str(tmp_path)):
        load_bandit(tmp_path)


def test_ucb_counts_the_prior_in_t_and_reset_returns_to_it():
    ucb = UCB(2, beta=1.0)
    ucb.set_prior(torch.tensor([30.0, 10.0]), torch.tensor([15.0, 4.0]))
    assert ucb.t == 40 and ucb.select() == 1  # 0.4 + sqrt(2 ln 40 / 10) beats 0.5 + sqrt(2 ln 40 / 30)
    bonus = torch.sqrt(2 * math.log(40) / ucb.counts)
    assert int(torch.argmax(ucb.means + bonus)) == 1
    for _ in range(5):
        ucb.update(0, 1.0)
    ucb.reset()
    assert ucb.t == 40 and ucb.counts.tolist() == [30.0, 10.0]


def test_exp3_importance_weights_only_under_bandit_feedback():
    bandit, full = EXP3(3, gamma=0.3), EXP3(3, gamma=0.3)
    for p in (bandit, full):
        p.select()
    p0 = bandit._probs[0]
    bandit.observe({0: 0.6}, chosen=0)
    full.observe({0: 0.6, 1: 0.6, 2: 0.0}, chosen=0)
    assert bandit.log_w[0] == pytest.approx(0.1 * 0.6 / p0)  # rate gamma / K, reward / p
    assert full.log_w.tolist() == pytest.approx([0.1 * 0.6, 0.1 * 0.6, 0.0])  # no importance weights


def test_elimination_stops_exploring_until_reset():
    policy = EliminationUCB(3, shift_threshold=0.0)
    gen = torch.Generator().manual_seed(0)
    means = [0.2, 0.5, 0.25]
    for _ in range(400):
        arm = policy.select()
        policy.update(arm, means[arm] + 0.05 * float(torch.randn((), generator=gen)))
    assert policy.alive.tolist() == [0.0, 1.0, 0.0]
    pulls = policy.counts.clone()
    for _ in range(2000):  # UCB's ln t would re-explore; an eliminated arm is never tried again
        policy.update(policy.select(), 0.5)
    assert (policy.counts - pulls).tolist() == [0.0, 2000.0, 0.0]
    policy.reset()
    assert policy.alive.tolist() == [1.0, 1.0, 1.0]


def test_a_detected_shift_brings_eliminated_arms_back():
    policy = EliminationUCB(2, shift_threshold=3.0)
    for _ in range(300):
        arm = policy.select()
        policy.update(arm, [0.2, 0.6][arm])
    assert policy.alive.tolist() == [0.0, 1.0]
    for _ in range(300):  # arm 1 drops below arm 0
        arm = policy.select()
        policy.update(arm, [0.4, 0.1][arm])
    assert policy.shifts >= 1
    assert [policy.select() for _ in range(3)] == [0, 0, 0]


def test_hedge_follows_the_best_arm_under_full_information():
    hedge = Hedge(3, eta=10.0, share=0.01, seed=0)
    for t in range(300):
        hedge.select()
        best = 0 if t < 150 else 2
        hedge.observe({a: 0.5 if a == best else 0.3 for a in range(3)}, chosen=0)
    assert hedge.probs()[2] > 0.9


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fixed_seed_gives_identical_runs(name):
    a = run(BUILDERS[name](), bernoulli, stationary, T=500, seed=1)
    b = run(BUILDERS[name](), bernoulli, stationary, T=500, seed=1)
    assert torch.equal(a, b)
