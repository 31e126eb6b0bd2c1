"""A head restricted to its K most frequent draft ids (models/head_restrict.py): same logits on the kept
ids, drafts only kept ids, and K = its own size gives the head back unchanged."""

import pytest
import torch
from test_fasthead import embedding, scattered  # tests/unit is on sys.path under pytest
from test_head import inputs

from metasd_train.decoding.head_arm import HeadRuntime
from metasd_train.errors import UserError
from metasd_train.models.head_restrict import restrict_head

pytestmark = pytest.mark.usefixtures("one_thread")


def counts_for(head) -> torch.Tensor:
    return torch.randint(0, 50, (head.config.vocab_size,), generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def logits_of(head, features, embeds):
    cache = head.new_cache(16)
    return head.step(head.fuse(features), embeds, torch.arange(features.shape[0]), cache, 16)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@torch.no_grad()
def test_full_size_is_the_same_head(kind):
    head = scattered(kind)
    full = restrict_head(head, counts_for(head), head.config.draft_vocab_size)
    assert full.config == head.config
    state, same = head.state_dict(), full.state_dict()
    assert state.keys() == same.keys() and all(torch.equal(state[k], same[k]) for k in state)
    features, embeds = inputs(head, 7)
    for a, b in zip(logits_of(full, features, embeds), logits_of(head, features, embeds)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch.no_grad()
def test_restricted_head_keeps_the_most_frequent_ids_and_their_logits():
    head = scattered("llama")
    counts, eos = counts_for(head), int(head.to_target(torch.tensor(0)))
    counts[eos] = 0  # the rarest id of the vocabulary, kept because it is forced in
    outside = int((~head.t2d).nonzero()[0])
    small = restrict_head(head, counts, 6, always=[eos, outside])  # an id outside the vocabulary is ignored
    ids = head.to_target(torch.arange(16))
    kept = small.to_target(torch.arange(6))
    by_count = sorted(ids.tolist(), key=lambda i: (-int(counts[i]), i))
    assert kept.tolist() == sorted({eos, *[i for i in by_count if i != eos][:5]})
    assert small.t2d.nonzero().squeeze(1).tolist() == kept.tolist() and small.config.draft_vocab_size == 6
    features, embeds = inputs(head, 7)
    (out, logits), (out_small, logits_small) = logits_of(head, features, embeds), logits_of(small, features, embeds)
    columns = [ids.tolist().index(i) for i in kept.tolist()]
    torch.testing.assert_close(out_small, out, rtol=0, atol=0)
    torch.testing.assert_close(logits_small, logits[:, columns], rtol=0, atol=0)


@torch.no_grad()
def test_restricted_head_drafts_only_kept_ids():
    head = scattered("qwen2")
    small = restrict_head(head, counts_for(head), 4)
    kept = set(small.to_target(torch.arange(4)).tolist())
    features, _ = inputs(head, 10)
    ids = torch.randint(0, head.config.vocab_size, (10,), generator=torch.Generator().manual_seed(1))
    for fast in (False, True):
        rt = HeadRuntime(small, embedding(head), None, 32, graphs=False, gamma=4, fast=fast, compile="fused")
        out, logits = rt.run(small.fuse(features), ids, 0)
        drafted = {t for p in range(10) for t in rt.chain(out[p : p + 1], logits[p : p + 1], p + 1, 4).tolist()}
        assert drafted <= kept and len(drafted) > 1
    with pytest.raises(UserError, match=r"choose 1\.\.16"):
        restrict_head(head, counts_for(head), 17)
