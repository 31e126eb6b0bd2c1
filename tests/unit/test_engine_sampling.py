"""Sampled output follows the target's distribution exactly: chi-square tests on the first two tokens."""

import itertools

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm
from metasd_train.decoding import engine as engine_module
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams, logits_to_probs, sample
from metasd_train.models.drafters import tiny_llama

V, N = 8, 20_000
PROMPT = [2, 3, 4, 2, 3]  # the n-gram arm proposes [4, 2, 3] here


@pytest.fixture(scope="module")
def target():
    return tiny_llama(V, layers=2, seed=11)


@pytest.fixture(scope="module")
def drafter():
    return tiny_llama(V, layers=1, seed=12)


def exact_two_token_dist(target, params):
    """P(x1, x2 | prompt) under the target's processed distribution, by enumeration."""
    with torch.no_grad():
        p1 = logits_to_probs(target(torch.tensor([PROMPT])).logits[0, -1], params)
        rows = torch.tensor([PROMPT + [x] for x in range(V)])
        p2 = logits_to_probs(target(rows).logits[:, -1], params)
    return p1[:, None] * p2  # [V, V]


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square p-value; cells with expected count < 5 are pooled."""
    counts, expected = counts.flatten().double(), probs.flatten().double() * counts.sum()
    small = expected < 5
    counts = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = expected > 0
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def sample_counts(target, arm, params):
    engine = SpecEngine(target, [arm], params, eos_ids=[])
    chooser = BanditChooser(FixedArm(1))
    counts = torch.zeros(V, V)
    for _ in range(N):
        a, b = engine.generate(PROMPT, 2, chooser).tokens
        counts[a, b] += 1
    return counts


SETTINGS = [SamplingParams(temperature=0.7, top_p=0.9), SamplingParams(temperature=1.0)]


@pytest.mark.parametrize("params", SETTINGS, ids=["T0.7-top_p0.9", "T1.0"])
@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_first_two_tokens_follow_target_distribution(target, drafter, params, kind):
    arm = ModelArm("d", drafter, V, gamma=2) if kind == "model" else NgramArm("ngram", V, gamma=2)
    counts = sample_counts(target, arm, params)
    assert chi_square_p(counts, exact_two_token_dist(target, params)) > 0.01


def wrong_rule(p, q, draft, generator=None):
    """A classic bug: on rejection sample from p instead of norm(max(p - q, 0))."""
    k = draft.shape[0]
    idx = torch.arange(k)
    accepted = torch.rand(k) * q[idx, draft] < p[idx, draft]
    n = torch.cumprod(accepted.long(), 0).sum()
    return n, sample(p[n])


def test_negative_control_catches_a_wrong_acceptance_rule(target, drafter, monkeypatch):
    monkeypatch.setattr(engine_module, "verify_sampling", wrong_rule)
    params = SETTINGS[1]
    counts = sample_counts(target, ModelArm("d", drafter, V, gamma=2), params)
    assert chi_square_p(counts, exact_two_token_dist(target, params)) < 0.01


def test_logits_to_probs_matches_hf_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50) * 3
    for t, k, p in itertools.product((0.5, 1.3), (0, 5), (1.0, 0.8)):
        ref = TemperatureLogitsWarper(t)(None, logits.clone())
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(p)(None, ref)
        torch.testing.assert_close(logits_to_probs(logits, SamplingParams(t, k, p)), ref.softmax(-1))
