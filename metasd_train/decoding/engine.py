"""The draft-verify loop: one arm drafts, the target verifies in one forward, one host sync a round.

Invariant between rounds: the target's cache holds every committed token but the last; each model
arm holds a prefix of the committed tokens (it catches up when next chosen). Batch size is 1: batch
> 1 needs per-sequence arms and accepted lengths, i.e. ragged cache crops (DynamicCache crops every
row alike) and a per-row position offset in verification — a static cache indexed by per-row
positions (gpt-fast's layout) is what stands in the way, not the sampling maths, which is already
batched over leading dims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from metasd_train.decoding.arms import Sequence
from metasd_train.decoding.cache import CachedLM
from metasd_train.decoding.sampling import (
    SamplingParams,
    block_divergence,
    logits_to_probs,
    verify_greedy,
    verify_sampling,
)
from metasd_train.decoding.static_cache import StaticLM, default_widths
from metasd_train.decoding.timing import Stopwatch
from metasd_train.errors import UserError


@dataclass
class RoundContext:
    """What a chooser may look at: prompt features from the target's prefill, and the round index."""

    features: torch.Tensor | None  # [H] mean last-layer hidden state of the prompt (CPU, float64)
    round: int = 0


def throughput_reward(accepted: int, t_draft: float, t_verify: float, max_block: int) -> float:
    """Tokens this round per unit of round time, in [0, 1]: 1 = a full block of the longest γ drafted for free.

    (accepted + 1) / max_block counts the round's tokens against the most any arm could give;
    t_verify / (t_draft + t_verify) charges drafting time. A round that drafted nothing earns
    1 / max_block, as the target alone would; a slow drafter must out-accept its cost.
    """
    return (accepted + 1) / max_block * t_verify / max(t_draft + t_verify, 1e-12)


@dataclass
class RoundRecord:
    round: int
    arm: int
    arm_name: str
    drafted: int
    accepted: int
    divergence: float  # mean 1 - TV(p, q) over the drafted block
    efficiency: float  # accepted / drafted
    throughput: float  # throughput_reward(): tokens per round time, relative to the best round possible
    t_draft: float
    t_verify: float
    t_catchup: float
    t_bandit: float
    t_round: float
    idle_divergence: dict[int, float] = field(default_factory=dict)  # full-feedback rewards of idle arms


@dataclass
class Generation:
    prompt_len: int
    tokens: list[int]  # new tokens only
    rounds: list[RoundRecord]
    stop: str  # eos | length | context
    seconds: float
    arm_names: list[str]
    features: torch.Tensor | None = None  # the prompt features the chooser saw

    def summary(self) -> dict:
        drafted_rounds = [r for r in self.rounds if r.drafted > 0]
        shares = {name: 0 for name in self.arm_names}
        for r in self.rounds:
            shares[r.arm_name] += 1
        n = max(len(self.rounds), 1)
        return {
            "new_tokens": len(self.tokens),
            "rounds": len(self.rounds),
            "tau": len(self.tokens) / n,  # mean tokens per round (accepted + 1)
            "tokens_per_s": len(self.tokens) / max(self.seconds, 1e-9),
            "acceptance": sum(r.accepted for r in drafted_rounds) / max(sum(r.drafted for r in drafted_rounds), 1),
            "arm_share": {k: v / n for k, v in shares.items()},
            "bandit_share": sum(r.t_bandit for r in self.rounds) / max(sum(r.t_round for r in self.rounds), 1e-9),
            "stop": self.stop,
            "seconds": self.seconds,
        }


class Chooser:
    """What the engine needs of a bandit policy (see metasd_train.bandit)."""

    def begin(self, ctx: RoundContext) -> None: ...
    def select(self, ctx: RoundContext) -> int: ...
    def observe(self, ctx: RoundContext, arm: int, rewards: dict[str, float]) -> None: ...


class SpecEngine:
    """Lossless speculative decoding over a target and a list of arms chosen per round."""

    def __init__(
        self,
        target,
        arms: list,
        params: SamplingParams = SamplingParams(),
        eos_ids=(),
        early_stop: float = 0.0,
        full_feedback: bool = False,
        max_context: int | None = None,
        fast: bool = False,
        max_len: int = 2048,
    ):
        self.vocab_size = target.config.vocab_size
        self.arms, self.params = arms, params
        self.eos_ids = set(int(e) for e in eos_ids)
        self.early_stop, self.full_feedback = early_stop, full_feedback
        self.max_context = max_context or getattr(target.config, "max_position_embeddings", 1 << 30)
        self.fast = fast
        self.max_block = max(a.gamma for a in arms) + 1  # the longest round: γmax drafts + 1
        if fast:  # static caches of max_len positions; CUDA graphs on a GPU
            self.max_context = min(self.max_context, max_len)
            widths = default_widths(self.max_block - 1)
            make = lambda model: StaticLM(model, self.vocab_size, max_len, widths)  # noqa: E731
        else:
            make = lambda model: CachedLM(model, self.vocab_size)  # noqa: E731
        self.target = make(target)
        self.lms = {i: make(arm.model) for i, arm in enumerate(arms) if arm.kind == "model"}  # this engine's caches
        self.device = next(target.parameters()).device
        self.generator: torch.Generator | None = None

    def warmup(self) -> float:
        """Capture every CUDA graph of the fast path now; returns the seconds it took."""
        start = time.perf_counter()
        for lm in [self.target, *self.lms.values()]:
            if isinstance(lm, StaticLM):
                lm.warmup()
        return time.perf_counter() - start

    def check_request(self, prompt_len: int, max_new_tokens: int) -> None:
        if prompt_len == 0:
            raise UserError("the prompt is empty: pass at least one token of text")
        if prompt_len >= self.max_context:
            raise UserError(
                f"the prompt has {prompt_len} tokens but the target's context is {self.max_context}; shorten it"
            )
        if self.fast and prompt_len + max_new_tokens > self.max_context:
            raise UserError(
                f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceed the fast path's "
                f"{self.max_context} cached positions; raise max_len or lower max_new_tokens"
            )
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")

    def prefill(self, prompt: list[int], max_new_tokens: int) -> tuple[Sequence, RoundContext]:
        """Reset every cache; the target sees all prompt tokens but the last; features for the chooser."""
        self.target.reset()
        for i, arm in enumerate(self.arms):
            if i in self.lms:
                arm.lm = self.lms[i]  # arms may be shared by engines; each engine brings its own caches
            arm.reset()
        cap = len(prompt) + max_new_tokens + self.max_block + 1
        seq = Sequence(torch.zeros(cap, dtype=torch.long, device=self.device), [])
        seq.extend(list(prompt))
        features = None
        if len(prompt) > 1:
            _, hidden = self.target.forward(seq.ids[: len(prompt) - 1], hidden=True)
            features = hidden.float().mean(dim=0).double().cpu()
        return seq, RoundContext(features)

    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        chooser: Chooser,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        self.check_request(len(prompt), max_new_tokens)
        start = time.perf_counter()
        seq, ctx = self.prefill(prompt, max_new_tokens)
        chooser.begin(ctx)
        limit = min(len(prompt) + max_new_tokens, self.max_context)
        rounds, stop = [], "length"
        while seq.length < limit:
            record, new = self.step(seq, ctx, chooser, limit)
            rounds.append(record)
            if hit := [i for i, t in enumerate(new) if t in self.eos_ids]:
                new = new[: hit[0] + 1]
                stop = "eos"
            seq.extend(new)
            if on_tokens:
                on_tokens(new)
            if stop == "eos":
                break
            ctx.round += 1
        if stop == "length" and limit < len(prompt) + max_new_tokens:
            stop = "context"
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return Generation(
            len(prompt),
            seq.host[len(prompt) :],
            rounds,
            stop,
            time.perf_counter() - start,
            [a.name for a in self.arms],
            ctx.features,
        )

    def step(self, seq: Sequence, ctx: RoundContext, chooser: Chooser, limit: int) -> tuple[RoundRecord, list[int]]:
        """One round: choose, draft, verify, one sync, crop caches, reward; returns the new tokens."""
        t0 = time.perf_counter()
        i = chooser.select(ctx)
        arm, L = self.arms[i], seq.length
        t_bandit = time.perf_counter() - t0
        watch = Stopwatch(self.device)
        allowed = min(arm.gamma, limit - L - 1)
        draft, q = arm.draft(seq, allowed, self.params, self.early_stop, self.generator)
        watch.mark("draft")
        k = draft.shape[0]
        logits = self.target.forward(torch.cat([seq.ids[L - 1 : L], draft]))  # [k+1, V]
        p = logits_to_probs(logits, self.params)
        if self.params.greedy:
            n, nxt = verify_greedy(logits, draft)
        else:
            n, nxt = verify_sampling(p, q, draft, self.generator)
        div = block_divergence(p[:k], q)
        watch.mark("verify")
        host = torch.cat([torch.stack([n.float(), nxt.float(), div.float()]), draft.float()]).tolist()  # the sync
        n, new = int(host[0]), [int(t) for t in host[3 : 3 + int(host[0])]] + [int(host[1])]
        self.target.rewind(L + n)
        arm.commit(L + n)
        idle = self._score_idle(seq, new, p, i) if self.full_feedback else {}
        if idle:
            watch.mark("catchup")
        times = watch.durations()
        t_round = time.perf_counter() - t0
        rec = RoundRecord(
            ctx.round,
            i,
            arm.name,
            k,
            n,
            host[2],
            n / k if k else 0.0,
            throughput_reward(n, times["draft"], times["verify"], self.max_block),
            times["draft"],
            times["verify"],
            times.get("catchup", 0.0),
            t_bandit,
            t_round,
            idle,
        )
        if allowed > 0:  # an arm that could draft but proposed nothing earns 0: its round still cost a forward
            t1 = time.perf_counter()
            chooser.observe(
                ctx, i, {"divergence": rec.divergence, "efficiency": rec.efficiency, "throughput": rec.throughput}
            )
            for j, r in idle.items():
                chooser.observe(ctx, j, {"divergence": r})
            rec.t_bandit += time.perf_counter() - t1
        return rec, new

    def _score_idle(self, seq: Sequence, new: list[int], p: torch.Tensor, chosen: int) -> dict[int, float]:
        """Full-information feedback: every idle arm's block divergence on the committed tokens."""
        L = seq.length
        width = min(len(new), p.shape[0], self.max_block - 1)
        scratch = Sequence(seq.ids, seq.host + new)  # committed view, not yet extended
        scratch.ids[L : L + len(new)] = torch.tensor(new, device=seq.ids.device)
        out = {}
        for j, arm in enumerate(self.arms):
            if j == chosen:
                continue
            q = arm.score(scratch, L, self.params)[:width]
            out[j] = block_divergence(p[:width], q)
        return {j: float(v) for j, v in out.items()}  # one more sync, only in full-feedback mode
