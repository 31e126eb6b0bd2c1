"""Pure tensor functions of speculative decoding: logits processing, drafting, verification, rewards.

Every function here is shape-polymorphic over its leading dims and does no host synchronisation,
so the engine can chain them and read back one small tensor per round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """The same processing is applied to target (p) and drafter (q) logits."""

    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def align_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Cut or pad (with -inf) the last dim to the target's vocabulary size."""
    # logits: [..., V_d] -> [..., vocab_size]
    v = logits.shape[-1]
    if v == vocab_size:
        return logits
    if v > vocab_size:
        return logits[..., :vocab_size]
    pad = logits.new_full((*logits.shape[:-1], vocab_size - v), float("-inf"))
    return torch.cat([logits, pad], dim=-1)


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the order and tie rules of HF's logits warpers).

    Greedy processing is argmax, so its distribution is one-hot: block divergence then counts
    per-position agreement, on the same footing for model and n-gram arms.
    """
    # logits: [..., V] -> probs [..., V] (float32)
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - params.top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return torch.softmax(logits, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one index per row without a host sync (exponential race; rows need not sum to 1)."""
    # probs: [..., V] -> [...]
    return race(probs, torch.empty_like(probs).exponential_(1, generator=generator))


def race(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """sample's draw with its Exp(1) noise given (drawn outside a CUDA graph): argmax of probs / noise."""
    # probs: [..., V]; noise: broadcastable to probs -> [...]
    return torch.argmax(probs / noise, dim=-1)


def pick(logits: torch.Tensor, params: SamplingParams, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token and the processed distribution it was drawn from (argmax when greedy)."""
    # logits: [V] -> token [], probs [V]
    probs = logits_to_probs(logits, params)
    token = torch.argmax(logits, dim=-1) if params.greedy else sample(probs, generator)
    return token, probs


def verify_greedy(target_logits: torch.Tensor, draft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accept the longest prefix where the draft equals the target's argmax; then the target's token.

    Also the block divergence of a greedy draft without materialising distributions: greedy p and q
    are one-hot, so 1 - TV is 1 where they agree and 0 elsewhere (block_divergence on one-hot rows).
    """
    # target_logits: [k+1, V], draft: [k] -> n_accepted [], next_token [], divergence []
    pred = target_logits.argmax(dim=-1)
    k = draft.shape[0]
    n = torch.cumprod((pred[:k] == draft).to(torch.int64), dim=0).sum()
    agree = (pred[:k] == draft).float().mean() if k else target_logits.new_zeros((), dtype=torch.float32)
    return n, pred[n], agree


def verify_sampling(
    p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023).

    Accept draft i with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection sample from
    norm(max(p_i - q_i, 0)); if all k are accepted, sample the bonus token from p_k. The output is
    distributed exactly as p. A draft without a distribution (n-gram) passes q as one-hot.
    """
    # p: [k+1, V] target probs, q: [k, V] drafter probs, draft: [k] -> n_accepted [], next_token []
    u = torch.rand(draft.shape[0], device=p.device, generator=generator)
    noise = torch.empty(p.shape[-1], device=p.device).exponential_(1, generator=generator)
    return accept_and_resample(p, q, draft, u, noise)


def accept_and_resample(p, q, draft, u, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """verify_sampling with its randomness given: uniforms `u` [k] for the accept tests, exponential
    `noise` [V] for the draw (sample's race). No host sync and no data-dependent shape: capturable."""
    k = draft.shape[0]
    idx = torch.arange(k, device=draft.device)
    p_d, q_d = p[idx, draft], q[idx, draft]
    accepted = u * q_d < p_d  # u < p/q without dividing; q_d > 0 since d was drawn from q
    n = torch.cumprod(accepted.to(torch.int64), dim=0).sum()
    at = n.view(1)
    p_n = p.index_select(0, at)[0]
    q_n = torch.cat([q, q.new_zeros(1, q.shape[-1])]).index_select(0, at)[0]  # no draft at n = k: q is 0
    row = (p_n - q_n).clamp_min(0)
    row = torch.where(row.sum() > 0, row, p_n)  # p == q exactly: nothing to correct
    return n, race(row, noise)


def round_outcome(logits, q, draft, u, noise, params: SamplingParams):
    """A sampled round from the target's logits [k+1, V]: (accepted count, next token, block
    divergence, the target's distributions p [k+1, V]); randomness given as in accept_and_resample."""
    p = logits_to_probs(logits, params)
    n, nxt = accept_and_resample(p, q, draft, u, noise)
    return n, nxt, block_divergence(p[: draft.shape[0]], q), p


def acceptance_rates(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per position, 1 - TV(p_i, q_i): the chance a draft from q_i is accepted; 0 where q_i is all zeros
    (the arm proposed nothing there)."""
    # p, q: [k, V] -> [k]
    return (1 - 0.5 * (p - q).abs().sum(dim=-1)) * (q.sum(dim=-1) > 0)


def block_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """MetaSD's alignment feedback: mean over the block of 1 - TV(p_i, q_i)."""
    # p, q: [k, V] -> []
    if p.shape[0] == 0:
        return p.new_zeros(())
    return acceptance_rates(p, q).mean()


def accepted_count(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, greedy: bool) -> torch.Tensor:
    """How many of `tokens` a drafter with distributions q would have had accepted, in a row.

    Greedy: the leading positions where q's one-hot choice is the committed token (exact). Sampled:
    the expected count, sum_i prod_{j<=i} (1 - TV_j).
    """
    # p, q: [k, V], tokens: [k] -> []
    if greedy:
        hits = q.gather(-1, tokens[:, None])[:, 0] > 0.5
        return torch.cumprod(hits.to(torch.int64), dim=0).sum()
    return torch.cumprod(acceptance_rates(p, q), dim=0).sum()
