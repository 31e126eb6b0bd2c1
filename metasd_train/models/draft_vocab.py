"""The draft vocabulary of a head: the K most frequent target tokens, plus ids that must be draftable.

Mappings use SpecForge's convention: `d2t[i]` is an offset (target id = i + d2t[i]) and `t2d` marks
the target ids in the draft vocabulary; draft ids are the chosen target ids in increasing order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from metasd_train.errors import UserError

_CHUNK = 1 << 20  # ids counted per bincount call


def token_counts(sequences: Iterable[list[int]], vocab_size: int) -> torch.Tensor:
    """Occurrences of each target id over `sequences` -> LongTensor [V]."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    pending: list[int] = []

    def flush() -> None:
        ids = torch.tensor(pending, dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
            raise UserError(f"token id {bad} is outside the target vocabulary (0..{vocab_size - 1})")
        counts.add_(torch.bincount(ids, minlength=vocab_size))
        pending.clear()

    for seq in sequences:
        pending.extend(seq)
        if len(pending) >= _CHUNK:
            flush()
    flush()
    return counts


def draft_vocab(counts: torch.Tensor, k: int, always: Iterable[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` most frequent ids (ties by lower id) with `always` forced in, sorted by target id.

    Returns:
        d2t [K] long offsets (target id = i + d2t[i]) and t2d [V] bool membership.
    """
    v = counts.shape[0]
    forced = sorted({int(i) for i in always})
    if not 1 <= k <= v:
        raise UserError(f"draft vocabulary size {k}; choose 1..{v} (the target vocabulary)")
    if any(not 0 <= i < v for i in forced):
        raise UserError(f"always-included ids {forced} must lie in 0..{v - 1}")
    if len(forced) > k:
        raise UserError(f"{len(forced)} always-included ids do not fit a draft vocabulary of {k}")
    t2d = torch.zeros(v, dtype=torch.bool)
    t2d[forced] = True
    order = torch.argsort(-counts.long(), stable=True)  # descending count, ties in id order
    rest = order[~t2d[order]][: k - len(forced)]
    t2d[rest] = True
    ids = t2d.nonzero().squeeze(1)  # sorted target ids
    return ids - torch.arange(k), t2d
