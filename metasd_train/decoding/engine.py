"""The draft-verify loop: one arm drafts, the target verifies in one forward, one host sync a round.

Invariant between rounds: the target's cache holds every committed token but the last; each arm
holds a prefix of the committed tokens (it catches up when next chosen). A round is five named
steps, gpt-fast style: choose -> draft -> verify -> sync and commit -> feedback.

Batch size is 1: batch > 1 needs per-sequence arms and accepted lengths (ragged positions per row),
not other sampling maths, which is already batched over leading dims.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from metasd_train.decoding.arms import Sequence
from metasd_train.decoding.cache import CachedLM
from metasd_train.decoding.records import Generation, IdleScore, RoundRecord
from metasd_train.decoding.sampled_verify import SampledVerify
from metasd_train.decoding.sampling import (
    SamplingParams,
    accepted_count,
    block_divergence,
    logits_to_probs,
    verify_greedy,
    verify_sampling,
)
from metasd_train.decoding.static_cache import StaticLM, catch_up_widths, verify_widths
from metasd_train.decoding.timing import Stopwatch
from metasd_train.errors import UserError
from metasd_train.models.attention import no_cudnn_attention


@dataclass
class RoundContext:
    """What a chooser may look at: prompt features from the target's prefill, and the round index."""

    features: torch.Tensor | None  # [H] mean last-layer hidden state of the prompt (CPU, float64)
    round: int = 0
    sleepers: frozenset[int] = frozenset()  # the arms that can have nothing to propose in a round


class Chooser:
    """What the engine needs of a bandit policy (see metasd_train.bandit.chooser). A chooser with
    `sleeping = True` is told, each round, which arms have nothing to propose."""

    sleeping = False

    def begin(self, ctx: RoundContext) -> None: ...
    def select(self, ctx: RoundContext, asleep: frozenset[int] = frozenset()) -> int: ...
    def observe(self, ctx: RoundContext, record: RoundRecord) -> None: ...


class Pinned(Chooser):
    """Always arm `arm`: the warm-up's requests, one per arm."""

    def __init__(self, arm: int):
        self.arm = arm

    def select(self, ctx: RoundContext, asleep: frozenset[int] = frozenset()) -> int:
        return self.arm


WARMUP_PROMPT, WARMUP_TOKENS = 8, 12  # prompt and new tokens of each warm-up request: a few rounds of every arm


def feature_layers(arms: list) -> tuple[int, ...] | None:
    """The target hidden layers the arms draft from (EAGLE-style heads); one set per engine."""
    wanted = {tuple(a.feature_layers) for a in arms if getattr(a, "feature_layers", None)}
    if len(wanted) > 1:
        raise UserError(f"head arms read different target layers {sorted(wanted)}; train them with the same layers")
    return wanted.pop() if wanted else None


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
        fast: bool = False,
        max_len: int | None = None,
        compile: str = "static",
    ):
        self.vocab_size = target.config.vocab_size
        self.arms, self.params = arms, params
        self.eos_ids = {int(e) for e in eos_ids}
        self.early_stop, self.full_feedback, self.fast, self.compile = early_stop, full_feedback, fast, compile
        self.max_context = getattr(target.config, "max_position_embeddings", 1 << 30)
        self.max_block = max(a.gamma for a in arms) + 1  # the longest round: γmax drafts + 1
        self.device = next(target.parameters()).device
        if fast and not max_len:
            raise ValueError("the fast path needs max_len: the positions its static caches hold")
        self.max_len = min(self.max_context, max_len) if fast else None
        self.feature_layers = feature_layers(arms)
        self.target = self.make_lm(target, self.feature_layers, drafter=False)
        graphed = fast and self.device.type == "cuda" and not params.greedy  # a sampled verify as one replay
        self.sampled_verify = SampledVerify(self.vocab_size, self.max_block, params, self.device) if graphed else None
        self.width_seconds: dict[int, float] = {}  # verify seconds per width (calibrate), for arms that size drafts
        self.runtimes = {i: arm.runtime(self) for i, arm in enumerate(arms)}  # this engine's caches per arm
        self.warmup_profile: dict[str, dict] = {}  # filled by warmup()
        self.sleepers = [i for i, arm in enumerate(arms) if arm.may_sleep]
        self.generator: torch.Generator | None = None
        self.t_step: float | None = None

    def make_lm(self, model, feature_layers=None, drafter: bool = True):
        """A cached view of `model` for this engine: static caches (+ graphs on CUDA) or DynamicCache.
        The target (`drafter=False`) gets its verify widths; a drafter model its catch-up widths."""
        if self.fast:
            widths = catch_up_widths(graphs=self.device.type == "cuda") if drafter else verify_widths(self.max_block)
            return StaticLM(
                model, self.vocab_size, self.max_len, widths, compile=self.compile, feature_layers=feature_layers
            )
        return CachedLM(model, self.vocab_size, feature_layers=feature_layers)

    @property
    def lms(self) -> dict:
        """The caches of model arms (by arm index), for tests and profiling."""
        return {i: rt for i, rt in self.runtimes.items() if self.arms[i].kind == "model"}

    def warmup(self) -> float:
        """Capture every CUDA graph of the fast path, time one target step and, on the fast path, run
        the first requests; returns the seconds it took. `warmup_profile` keeps, per cache (target,
        then arms by name) and for the first requests, its seconds and graphs."""
        start = time.perf_counter()
        named = [("target", self.target), *((self.arms[i].name, rt) for i, rt in self.runtimes.items())]
        named += [("sampled verify", self.sampled_verify)] if self.sampled_verify is not None else []
        self.warmup_profile = {}
        for name, rt in named:
            if hasattr(rt, "warmup"):
                t = time.perf_counter()
                rt.warmup()
                self._sync_device()  # a cache's queued work is billed to it, not to the next
                graphs = getattr(rt, "graph_count", 0)
                self.warmup_profile[name] = {"seconds": round(time.perf_counter() - t, 3), "graphs": graphs}
        self.calibrate()
        if self.fast:
            t = time.perf_counter()
            self.first_requests()
            self._sync_device()
            self.warmup_profile["first requests"] = {"seconds": round(time.perf_counter() - t, 3), "graphs": 0}
        return time.perf_counter() - start

    def _sync_device(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def first_requests(self) -> None:
        """A short request with each arm pinned, so that no user request pays a first call's costs
        (an eager prefill, lazily built state, the first pass through each arm's code). The prompt
        repeats, so that the n-gram arm finds matches; EOS does not end them, so every request runs
        its rounds; the caller's random state is kept (sampled requests draw)."""
        ids = [t for t in range(min(self.vocab_size, 64)) if t not in self.eos_ids][:3]
        n_prompt = min(WARMUP_PROMPT, self.max_len // 2)
        n_new = min(WARMUP_TOKENS, self.max_len - n_prompt)
        if not ids or n_prompt < 1 or n_new < 1:
            return
        prompt = (ids * n_prompt)[:n_prompt]
        saved = self.generator.get_state() if self.generator is not None else None
        eos, self.eos_ids = self.eos_ids, frozenset()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for i in range(len(self.arms)):
                    self.generate(prompt, n_new, Pinned(i))
        finally:
            self.eos_ids = eos
            if saved is not None:
                self.generator.set_state(saved)

    def calibrate(self) -> float:
        """Seconds of one width-1 target forward (the speed reward's unit: the target alone); with an
        arm that sizes its drafts by cost (`sizes_drafts`), the seconds of every verify width too."""
        self.t_step = self.forward_seconds(self.target, 1)
        if any(getattr(a, "sizes_drafts", False) for a in self.arms):
            self.width_seconds.update({w: self.forward_seconds(self.target, w) for w in range(2, self.max_block + 1)})
            self.width_seconds[1] = self.t_step
        return self.t_step

    @torch.inference_mode()
    def forward_seconds(self, lm, width: int, reps: int = 5) -> float:
        """Median seconds of one forward of `width` tokens through one of this engine's caches (graphs
        replayed where captured); the cache is reset after."""
        times, x = [], torch.zeros(width, dtype=torch.long, device=self.device)
        for _ in range(reps + 1):
            lm.reset()
            watch = Stopwatch(self.device)
            lm.forward(x)
            watch.mark("step")
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(watch.durations()["step"])
        lm.reset()
        return statistics.median(times[1:])

    def draft_seconds(self, i: int) -> float:
        """Seconds arm i spends per drafted token (0 for arms without a model)."""
        rt = self.runtimes[i]
        if hasattr(rt, "step_seconds"):
            return rt.step_seconds()
        return self.forward_seconds(rt, 1) if self.arms[i].kind == "model" else 0.0

    def check_request(self, prompt_len: int, max_new_tokens: int) -> None:
        if prompt_len == 0:
            raise UserError("the prompt is empty: pass at least one token of text")
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if prompt_len >= self.max_context:
            raise UserError(
                f"the prompt has {prompt_len} tokens but the target's context is {self.max_context}; shorten it"
            )
        if self.fast and prompt_len + max_new_tokens > self.max_len:
            raise UserError(
                f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceed the fast path's "
                f"{self.max_len} cached positions; raise max_len or lower max_new_tokens"
            )

    def prefill(self, prompt: list[int], max_new_tokens: int) -> tuple[Sequence, RoundContext]:
        """Reset every cache; the target sees all prompt tokens but the last; features for the chooser."""
        self.target.reset()
        for i, arm in enumerate(self.arms):
            arm.bind(self.runtimes[i])  # arms may be shared by engines; each engine brings its own caches
            arm.reset()
        cap = len(prompt) + max_new_tokens + self.max_block + 1
        seq = Sequence(torch.zeros(cap, dtype=torch.long, device=self.device), [])
        seq.extend(list(prompt))
        features = None
        if len(prompt) > 1:
            with no_cudnn_attention():  # the prefill is eager and every prompt length a new shape
                _, hidden = self.target.forward(seq.ids[: len(prompt) - 1], hidden=True)
            features = hidden.float().mean(dim=0).double().cpu()
        return seq, RoundContext(features, sleepers=frozenset(self.sleepers))

    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        chooser: Chooser,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        """Decode up to `max_new_tokens` after `prompt`; `on_tokens` gets each round's committed tokens.
        The Generation's seconds leave out the time spent in `on_tokens`."""
        self.check_request(len(prompt), max_new_tokens)
        if self.t_step is None:
            self.calibrate()
        start = time.perf_counter()
        seq, ctx = self.prefill(prompt, max_new_tokens)
        chooser.begin(ctx)
        limit = min(len(prompt) + max_new_tokens, self.max_context)
        rounds, stop = [], "length"
        while seq.length < limit:
            record, new = self.step(seq, ctx, chooser, limit)
            rounds.append(record)
            if hit := [i for i, t in enumerate(new) if t in self.eos_ids]:
                new, stop = new[: hit[0] + 1], "eos"
            seq.extend(new)
            if on_tokens:  # the caller's time (a streaming printer): not the request's
                t_caller = time.perf_counter()
                on_tokens(new)
                start += time.perf_counter() - t_caller
            if stop == "eos":
                break
            ctx.round += 1
        if stop == "length" and limit < len(prompt) + max_new_tokens:
            stop = "context"
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return Generation(seq.host[len(prompt) :], rounds, stop, seconds, [a.name for a in self.arms])

    def step(self, seq: Sequence, ctx: RoundContext, chooser: Chooser, limit: int) -> tuple[RoundRecord, list[int]]:
        """One round: choose, draft, verify, one sync and commit, feedback; returns the new tokens."""
        t0, room = time.perf_counter(), limit - seq.length - 1
        asleep = self._asleep(seq, room) if room > 0 and getattr(chooser, "sleeping", False) else frozenset()
        i = chooser.select(ctx, asleep) if asleep else chooser.select(ctx)
        t_bandit = time.perf_counter() - t0
        arm, L, watch = self.arms[i], seq.length, Stopwatch(self.device)
        allowed = min(arm.gamma, room)
        draft, q = arm.draft(seq, allowed, self.params, self.early_stop, self.generator)
        watch.mark("draft")
        n, nxt, div, p = self._verify(seq, draft, q)
        watch.mark("verify")
        n, div, new = self._sync(n, nxt, div, draft)
        self.target.rewind(L + n)
        arm.commit(L + n)
        watch.mark("commit")  # the sync and commit every round pays: host work, not idle scoring
        idle = self._score_idle(seq, new, p, i, asleep) if self.full_feedback else {}
        watch.mark("idle")
        times = watch.durations()
        rec = RoundRecord(
            ctx.round, i, arm.name, draft.shape[0], n, div, times["draft"], times["verify"], times["idle"],
            t_bandit, time.perf_counter() - t0, self.t_step, self.max_block, allowed > 0, idle,
        )  # fmt: skip
        if rec.could_draft:  # an arm that could draft but proposed nothing still cost its round
            t1 = time.perf_counter()
            chooser.observe(ctx, rec)  # it sees the round without its own update; the record then includes it
            t_observe = time.perf_counter() - t1
            rec.t_bandit, rec.t_round = rec.t_bandit + t_observe, rec.t_round + t_observe
        return rec, new

    def _asleep(self, seq: Sequence, room: int) -> frozenset[int]:
        """The arms with nothing to propose this round (an n-gram arm without a match)."""
        return frozenset(j for j in self.sleepers if not self.arms[j].proposes(seq, min(self.arms[j].gamma, room)))

    def _verify(self, seq: Sequence, draft: torch.Tensor, q: torch.Tensor):
        """The target's forward over [last committed token, draft]; accepted count, next token, divergence."""
        L, k = seq.length, draft.shape[0]
        logits = self.target.forward(torch.cat([seq.ids[L - 1 : L], draft]))  # [k+1, V]
        if self.params.greedy:  # no distributions needed, unless idle arms are scored against p
            n, nxt, div = verify_greedy(logits, draft)
            return n, nxt, div, (logits_to_probs(logits, self.params) if self.full_feedback else None)
        if self.sampled_verify is not None:
            return self.sampled_verify(logits, q, draft, self.generator)
        p = logits_to_probs(logits, self.params)
        n, nxt = verify_sampling(p, q, draft, self.generator)
        return n, nxt, block_divergence(p[:k], q), p

    @staticmethod
    def _sync(n, nxt, div, draft) -> tuple[int, float, list[int]]:
        """The round's one host sync: accepted count, next token, divergence and the draft together."""
        host = torch.cat([torch.stack([n.float(), nxt.float(), div.float()]), draft.float()]).tolist()
        n = int(host[0])
        return n, host[2], [int(t) for t in host[3 : 3 + n]] + [int(host[1])]

    def _score_idle(
        self, seq: Sequence, new: list[int], p: torch.Tensor, chosen: int, asleep: frozenset[int] = frozenset()
    ) -> dict[int, IdleScore]:
        """Full-information feedback: every idle arm that was awake, on the committed tokens of this round, alike."""
        L = seq.length
        scratch = Sequence(seq.ids, seq.host + new)  # committed view, not yet extended
        scratch.ids[L : L + len(new)] = torch.tensor(new, device=seq.ids.device)
        committed = scratch.ids[L : L + len(new)]
        scores = {}
        for j, arm in enumerate(self.arms):
            width = min(len(new), arm.gamma)
            if j == chosen or width == 0 or j in asleep:
                continue
            q = arm.score(scratch, L, self.params)[:width]
            scores[j] = (width, accepted_count(p[:width], q, committed[:width], self.params.greedy),
                         block_divergence(p[:width], q))  # fmt: skip
        if not scores:
            return {}
        host = torch.stack([torch.stack([a.float(), d.float()]) for _, a, d in scores.values()]).tolist()
        return {j: IdleScore(w, a, d) for (j, (w, _, _)), (a, d) in zip(scores.items(), host)}  # one more sync
