"""Each acceptance branch pinned down with hand-written distributions (litgpt's stub style)."""

import pytest
import torch

from metasd_train.decoding.sampling import (
    SamplingParams,
    align_vocab,
    block_divergence,
    logits_to_probs,
    round_outcome,
    verify_greedy,
    verify_sampling,
)


def onehot(i, v=5):
    return torch.nn.functional.one_hot(torch.tensor(i), v).float()


def test_greedy_accepts_longest_matching_prefix_then_target_token():
    logits = torch.stack([onehot(2), onehot(3), onehot(4), onehot(0)]) * 10  # target argmax: 2, 3, 4, 0
    n, nxt, agree = verify_greedy(logits, torch.tensor([2, 3, 1]))
    assert (int(n), int(nxt)) == (2, 4) and float(agree) == pytest.approx(2 / 3)
    n, nxt, agree = verify_greedy(logits, torch.tensor([2, 3, 4]))
    assert (int(n), int(nxt), float(agree)) == (3, 0, 1.0)  # all accepted: bonus token
    n, nxt, agree = verify_greedy(logits, torch.tensor([1, 3, 4]))
    assert (int(n), int(nxt)) == (0, 2)  # later matches after a miss do not count
    q = torch.stack([onehot(1), onehot(3), onehot(4)])
    assert float(agree) == float(block_divergence(torch.softmax(logits[:3] * 100, -1).round(), q))  # one-hot p, q


def test_sampling_always_accepts_when_q_equals_p():
    p = torch.softmax(torch.randn(4, 5), -1)
    for _ in range(50):
        n, _ = verify_sampling(p, p[:3], torch.multinomial(p[:3], 1).squeeze(1))
        assert int(n) == 3


def test_sampling_never_accepts_a_token_the_target_gives_zero_and_corrects_from_residual():
    p = torch.stack([onehot(1), onehot(2)])  # target: certainly 1, then 2
    q = onehot(3).view(1, 5)  # drafter proposes 3
    for _ in range(20):
        n, nxt = verify_sampling(p, q, torch.tensor([3]))
        assert (int(n), int(nxt)) == (0, 1)


def test_residual_excludes_mass_the_drafter_already_covered():
    p = torch.tensor([[0.5, 0.5, 0, 0, 0], [0.2] * 5])
    q = torch.tensor([[1.0, 0, 0, 0, 0]])  # drafted token 0: accepted with prob 0.5, else must be 1
    outs = [verify_sampling(p, q, torch.tensor([0])) for _ in range(400)]
    rejected = [int(t) for n, t in outs if int(n) == 0]
    assert rejected and set(rejected) == {1}
    assert 0.35 < sum(int(n) for n, _ in outs) / len(outs) < 0.65


def previous_rule(p, q, draft, generator):
    """verify_sampling as written before the capturable form, kept here as the reference: the
    residual of every row, the row at n picked by indexing, then sampling.sample's race."""
    k = draft.shape[0]
    idx = torch.arange(k)
    u = torch.rand(k, generator=generator)
    n = torch.cumprod((u * q[idx, draft] < p[idx, draft]).to(torch.int64), dim=0).sum()
    row = torch.cat([(p[:k] - q).clamp_min(0), p[k:]], dim=0)[n]
    row = torch.where(row.sum() > 0, row, p[n])
    return n, torch.argmax(row / torch.empty_like(row).exponential_(1, generator=generator), dim=-1)


def test_round_outcome_draws_what_the_previous_rule_drew_from_the_same_generator():
    """The capturable form (randomness passed in, as the CUDA graph gets it) and verify_sampling give
    the tokens the previous formula gave from the same generator state, for every draft length, the
    all-accepted one (k = 0: a plain draw from p) included, and with p == q on some rows."""
    params = SamplingParams(temperature=0.9, top_p=0.95)
    for k in range(4):
        logits, q_logits = torch.randn(k + 1, 11) * 2, torch.randn(k, 11) * 2
        q_logits[: k // 2] = logits[: k // 2]  # the leading rows: p == q there
        q = logits_to_probs(q_logits, params)
        draft = torch.multinomial(q, 1).squeeze(1) if k else torch.zeros(0, dtype=torch.long)
        p = logits_to_probs(logits, params)
        for seed in range(40):
            want = previous_rule(p, q, draft, torch.Generator().manual_seed(seed))
            n, nxt = verify_sampling(p, q, draft, torch.Generator().manual_seed(seed))
            g = torch.Generator().manual_seed(seed)
            u, noise = torch.rand(k, generator=g), torch.empty(11).exponential_(1, generator=g)
            n2, nxt2, div, p2 = round_outcome(logits, q, draft, u, noise, params)
            assert (int(n), int(nxt)) == (int(n2), int(nxt2)) == (int(want[0]), int(want[1]))
            assert torch.equal(p2, p)
            assert float(div) == float(block_divergence(p[:k], q))


def test_block_divergence_and_vocab_alignment():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    assert abs(float(block_divergence(p, q)) - 0.5) < 1e-6
    assert align_vocab(torch.zeros(2, 7), 5).shape == (2, 5)
    padded = align_vocab(torch.zeros(2, 3), 5)
    assert padded.shape == (2, 5) and torch.isinf(padded[:, 3:]).all()
    probs = logits_to_probs(padded, SamplingParams(1.0))
    assert float(probs[:, 3:].sum()) == 0.0
