"""stage_distill.cut_draft_vocab: the smallest listed draft vocabulary whose validation accepted
length stays within tolerance is kept; none passing keeps the trained size."""

from types import SimpleNamespace

import pytest
import torch

from metasd_train.compose import compose
from metasd_train.models.drafters import answer_counts
from metasd_train.models.head import build_head
from metasd_train.models.random_init import tiny_llama
from metasd_train.pipeline import stage_distill

V = 96


def context(tmp_path, sizes, tolerance):
    cfg = compose(
        [
            "recipe=tiny",
            "drafter=head",
            f"drafter.head.draft_vocab_sizes={sizes}",
            f"drafter.head.draft_vocab_tolerance={tolerance}",
        ]
    )
    target = tiny_llama(vocab_size=V, layers=2, hidden=32)
    return SimpleNamespace(cfg=cfg, target=target, tokenizer=None, run=SimpleNamespace(path=tmp_path))


EXAMPLES = {  # the target's own training answers count; written ones and other splits do not
    "response_ids": [list(range(10, 70)), list(range(10, 40)), [90] * 50, [91] * 50],
    "split": ["train", "train", "val", "train"],
    "kind": ["greedy", "greedy", "greedy", "written"],
}


@pytest.mark.parametrize(
    "lengths, tolerance, kept",
    [
        ({16: 0.5, 32: 0.99, 64: 1.0}, 0.05, 32),  # 16 loses too much, 32 is within 5%
        ({16: 0.98, 32: 0.99, 64: 1.0}, 0.05, 16),  # the smallest that passes
        ({16: 0.5, 32: 0.6, 64: 1.0}, 0.05, 64),  # none passes: the trained size stays
    ],
)
def test_the_smallest_size_within_tolerance_is_kept(tmp_path, monkeypatch, lengths, tolerance, kept):
    ctx = context(tmp_path, "[16,32,256]", tolerance)
    head = build_head(ctx.target, 64, answer_counts(EXAMPLES, V), eos_ids=[1])
    tried = []

    def fake_validate(module, dm, trainer):
        k = module.head.config.draft_vocab_size
        tried.append(k)
        return {"all": {"accept_len": lengths[k]}}

    monkeypatch.setattr(stage_distill, "validate", fake_validate)
    monkeypatch.setattr(stage_distill, "make_trainer", lambda *a, **k: None)
    dm = SimpleNamespace(val_domains=["all"])
    full = {"all": {"accept_len": lengths[64]}}
    out, rows, record = stage_distill.cut_draft_vocab(ctx, head, EXAMPLES, dm, full)
    assert out.config.draft_vocab_size == kept and record["kept"] == kept
    assert rows == {"all": {"accept_len": lengths[kept]}} and record["rows"] == full  # the kept head's rows
    assert tried == [k for k in (16, 32) if k <= kept or kept == 64]  # smallest first, stops at the first pass
    assert record["accept_len"] == {k: lengths[k] for k in sorted([64, *tried])}
    if kept < 64:  # the cut keeps the most frequent ids of the target's own training answers (10..39 twice), and EOS
        ids = set(out.to_target(torch.arange(kept)).tolist())
        assert 1 in ids and len(ids) == kept
        assert ids - {1} <= set(range(10, 40)) if kept == 16 else set(range(10, 40)) <= ids
    # a resumed stage cuts to the remembered size, whatever validation says this time
    tried.clear()
    lengths.update({16: 1.0, 32: 1.0, 64: 1.0})
    again, _, record = stage_distill.cut_draft_vocab(ctx, head, EXAMPLES, dm, full)
    assert again.config.draft_vocab_size == kept and record["kept"] == kept
    assert tried == ([kept] if kept < 64 else [])


def test_no_sizes_or_a_truncation_drafter_leaves_the_drafter_alone(tmp_path):
    ctx = context(tmp_path, "[]", 0.01)
    head = build_head(ctx.target, 64, torch.arange(V), eos_ids=[1])
    full = {"all": {"accept_len": 1.0}}
    assert stage_distill.cut_draft_vocab(ctx, head, EXAMPLES, None, full) == (head, full, None)
    ctx = context(tmp_path, "[16]", 0.01)
    assert stage_distill.cut_draft_vocab(ctx, head, EXAMPLES, None, {}) == (head, {}, None)  # no "all" row
    ctx.cfg.drafter.kind = "truncated"  # a causal LM's config has no draft vocabulary at all
    assert stage_distill.cut_draft_vocab(ctx, ctx.target, EXAMPLES, None, full) == (ctx.target, full, None)
