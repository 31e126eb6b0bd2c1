"""The fast head step (decoding/fasthead.py) computes DraftHead.step: fused q/k/v and gate/up, RoPE
tables, fused_ops' functions (those run eagerly and those written for inductor); and HeadRuntime
drafts the same tokens through either."""

import dataclasses

import pytest
import torch
from test_head import TARGETS, inputs, make_head  # tests/unit is on sys.path under pytest

from metasd_train.decoding.fasthead import EAGER, INDUCTOR, FastHead, HeadSteps, inductor_greedy_step, unsupported
from metasd_train.decoding.head_arm import HeadRuntime
from metasd_train.errors import UserError
from metasd_train.models.draft_vocab import draft_vocab
from metasd_train.models.head import DraftHead

pytestmark = pytest.mark.usefixtures("one_thread")
LENGTH = 40
OPS = pytest.mark.parametrize("ops", [EAGER, INDUCTOR], ids=["eager-ops", "inductor-ops"])


def scattered(kind: str) -> DraftHead:
    """test_head's head with its 16 draft ids scattered over the vocabulary (draft id != target id)."""
    head = make_head(kind)
    counts = torch.randperm(head.config.vocab_size, generator=torch.Generator().manual_seed(2))
    head.set_vocab(*draft_vocab(counts, head.config.draft_vocab_size))
    assert (head.d2t != 0).any()
    return head


def embedding(head) -> torch.nn.Embedding:
    embed = torch.nn.Embedding(head.config.vocab_size, head.config.hidden_size)
    torch.nn.init.normal_(embed.weight, generator=torch.Generator().manual_seed(0))
    return embed


def feed(steps, head, features, ids, chunks, span_of):
    """Chunks of true features, then greedy links fed their own drafts, as HeadRuntime feeds them."""
    cache, outs, start = steps.cache, [], 0
    for n in chunks:
        pos = torch.arange(start, start + n)
        outs.append(steps.step(head.fuse(features[pos]), ids[pos], pos, cache, span_of(start + n)))
        start += n
    hidden, token = outs[-1][0][-1:], steps.pick(outs[-1][1][-1:])
    for p in range(start, start + 4):
        hidden, token = steps.greedy_step(hidden, token, torch.tensor([p]), cache, span_of(p + 1))
        outs.append((hidden, token))
    return outs


@pytest.mark.parametrize("kind", TARGETS)
@OPS
@torch.no_grad()
def test_fast_steps_equal_draft_head_steps(kind, ops):
    head = scattered(kind)
    embed = embedding(head)
    ref, fast = HeadSteps(head, embed), FastHead(head, embed, LENGTH, compile="fused")  # off CUDA: eager
    fast.ops = ops
    features, _ = inputs(head, 20)
    ids = torch.randint(0, head.config.vocab_size, (20,), generator=torch.Generator().manual_seed(1))
    span_of = lambda end: 16 if end <= 16 else LENGTH  # noqa: E731  (requests cross a span)
    ref.cache, fast.cache = ref.new_cache(LENGTH), fast.new_cache(LENGTH)
    for chunks in ([5, 1, 3, 2, 1], [16]):  # the second pass overwrites every slot the first wrote
        expected = feed(ref, head, features, ids, chunks, span_of)
        for got, want in zip(feed(fast, head, features, ids, chunks, span_of), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.cache.k, ref.cache.k, rtol=1e-5, atol=1e-5)  # k rotated, same head order
    torch.testing.assert_close(fast.cache.v, ref.cache.v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", TARGETS)
@torch.no_grad()
def test_what_compiles_whole_is_one_greedy_link(kind):
    head = scattered(kind)
    embed = embedding(head)
    ref, fast = HeadSteps(head, embed), FastHead(head, embed, LENGTH)
    ref_cache, cache = ref.new_cache(LENGTH), fast.new_cache(LENGTH)
    hidden, token, pos = torch.randn(1, head.config.hidden_size), torch.tensor([3]), torch.tensor([21])
    want = ref.greedy_step(hidden, token, pos, ref_cache, LENGTH)
    tables = (fast.slots[:LENGTH], fast.cos, fast.sin, fast.rep, cache.k, cache.v)
    got = inductor_greedy_step(fast.weights, embed.weight, fast.draft_ids, hidden, token, pos, *tables)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_stale_slots_stay_masked_on_the_fast_step():
    head = scattered("qwen2")
    fast = FastHead(head, embedding(head), LENGTH)
    features, _ = inputs(head, 9)
    ids, pos = torch.arange(9) % head.config.vocab_size, torch.arange(9)
    cache = fast.new_cache(16)
    _, clean = fast.step(head.fuse(features), ids, pos, cache, 16)
    fast.step(100 * torch.randn(8, 32), torch.arange(8), torch.arange(6, 14), cache, 16)  # rejected drafts
    _, again = fast.step(head.fuse(features[6:]), ids[6:], pos[6:], cache, 16)
    torch.testing.assert_close(again, clean[6:], rtol=1e-5, atol=1e-5)


def runtime(head, fast: bool) -> HeadRuntime:
    return HeadRuntime(head, embedding(head), None, capacity=LENGTH, graphs=False, gamma=4, fast=fast, compile="layer")


@pytest.mark.parametrize("kind", TARGETS)
@torch.no_grad()
def test_runtime_drafts_the_same_chains_fast_or_not(kind):
    head = scattered(kind)
    features, _ = inputs(head, 12)
    ids = torch.randint(0, head.config.vocab_size, (12,), generator=torch.Generator().manual_seed(1))
    plain, fast = runtime(head, fast=False), runtime(head, fast=True)
    assert isinstance(fast.net, FastHead) and type(plain.net) is HeadSteps
    chains = []
    for rt in (plain, fast):
        out, logits = rt.run(head.fuse(features), ids, 0)
        chains.append([rt.chain(out[p : p + 1], logits[p : p + 1], p + 1, 5).tolist() for p in range(12)])
    assert chains[0] == chains[1]
    assert len({tuple(c) for c in chains[0]}) > 3  # varied chains, not one repeated token
    allowed = set(head.to_target(torch.arange(head.config.draft_vocab_size)).tolist())
    assert {t for c in chains[1] for t in c} <= allowed  # drafts are target ids of the draft vocabulary


def test_heads_the_fast_step_cannot_run_fall_back_to_draft_head_step():
    head = make_head("llama")
    gelu = DraftHead(dataclasses.replace(head.config, hidden_act="gelu"))
    assert "hidden_act=gelu" in unsupported(gelu, embedding(head))
    assert "nn.Embedding" in unsupported(head, torch.nn.Linear(2, 2))
    rt = runtime(gelu, fast=True)
    assert type(rt.net) is HeadSteps and "gelu" in rt.fallback
    with pytest.raises(UserError, match="fast head step cannot run"):
        FastHead(gelu, embedding(head), LENGTH)
    with pytest.raises(UserError, match="compile='max'"):
        FastHead(head, embedding(head), LENGTH, compile="max")
    with pytest.raises(ValueError, match="outgrows"):
        FastHead(head, embedding(head), LENGTH).new_cache(LENGTH + 1)
