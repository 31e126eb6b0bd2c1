"""A trained draft head restricted to the K most frequent ids of its draft vocabulary, with no retraining.

FR-Spec's idea: most of a drafter's lm_head rows score tokens that are rarely right, yet every draft
step pays for them. Keeping the K most frequent (by the token counts the vocabulary was built from,
`draft_vocab.token_counts`) slices `lm_head` rows and `d2t`, and shrinks `t2d`; every other weight is
kept. K = the head's own size gives the head back unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from metasd_train.errors import UserError
from metasd_train.models.draft_vocab import draft_vocab
from metasd_train.models.head import DraftHead


def restrict_head(head: DraftHead, counts: torch.Tensor, k: int, always: Iterable[int] = ()) -> DraftHead:
    """A copy of `head` that drafts only the `k` most frequent ids of its draft vocabulary.

    Args:
        head: a trained DraftHead (adapters merged).
        counts: [V] target-token counts; ids outside the head's vocabulary are never kept.
        k: the new draft-vocabulary size, 1..head.config.draft_vocab_size.
        always: ids kept whatever their count (eos), where the head's vocabulary has them.

    Returns:
        A new DraftHead on the head's device and dtype; ties keep the lower id, as `draft_vocab` does.
    """
    size = head.config.draft_vocab_size
    if not 1 <= k <= size:
        raise UserError(f"draft vocabulary size {k}; choose 1..{size} (the head's own)")
    ids = head.to_target(torch.arange(size, device=head.d2t.device)).cpu()  # [K0] target ids, increasing
    known = torch.full_like(counts.long().cpu(), -1)  # ids outside the vocabulary rank below every count
    known[ids] = counts.long().cpu()[ids]
    t2d_cpu = head.t2d.cpu()
    d2t, t2d = draft_vocab(known, k, always=[int(i) for i in always if t2d_cpu[int(i)]])
    rows = t2d[ids].nonzero().squeeze(1)  # the kept draft ids, in order
    state = {name: t.detach().clone() for name, t in head.state_dict().items()}
    state["lm_head.weight"] = state["lm_head.weight"][rows.to(head.lm_head.weight.device)]
    state["d2t"], state["t2d"] = d2t.to(head.d2t.device), t2d.to(head.t2d.device)
    with torch.device("meta"):
        small = DraftHead(dataclasses.replace(head.config, draft_vocab_size=k))
    small.load_state_dict(state, assign=True)
    return small.train(head.training)
