"""A feature-level drafter (EAGLE-3 head) as an engine arm.

The target's verify forward already computes its hidden states: the engine's target cache keeps
the chosen layers of every fed position in `features` (indexed by position), so a head drafts from
them with no extra target work. The head's own KV cache (one layer) holds positions whose inputs
were true target features; chained draft steps write past them and are overwritten next round, so
a rejection needs no rollback, and a head that sat out catches up from the stored features.

Positions: the head at position s reads (target feature h_s, embedding of x_{s+1}) and predicts
x_{s+2} (metasd_train/models/head.py). With P committed tokens the target has features for
0..P-2, so catch-up feeds positions seen..P-2 and the last output drafts x_P.
"""

from __future__ import annotations

import statistics

import torch

from metasd_train.decoding.arms import Arm, Sequence
from metasd_train.decoding.fasthead import FastHead, HeadSteps, unsupported
from metasd_train.decoding.sampling import SamplingParams, logits_to_probs, pick, race
from metasd_train.decoding.static_cache import spans_for
from metasd_train.decoding.timing import Stopwatch

CATCH_UP_WIDTH = 32  # positions per catch-up forward (graph widths 1..CATCH_UP_WIDTH in powers of 2)
# A head is one layer: attending 1,024 slots instead of 256 costs it little (draft ms per round in
# bench/results/h100-qwen-coder-32c8c0e against -3d67a31), while every span is a graph per width and
# chain length for each head of an ensemble, captured at start-up.
HEAD_SMALLEST_SPAN = 1024


class HeadRuntime:
    """One engine's state for one head: its KV cache, what it has seen, and its CUDA graphs.

    With `fast`, steps run through fasthead.FastHead (fused weights, RoPE tables, `compile`d ops)
    when it supports the head (`fallback` says why not), else through `DraftHead.step` (HeadSteps).
    """

    def __init__(
        self, head, embed, target_lm, capacity: int, graphs: bool, gamma: int, fast=False, compile="none", params=None
    ):
        self.head, self.embed, self.target_lm, self.gamma = head, embed, target_lm, gamma
        self.params = params or SamplingParams()  # the engine's: which chains warmup() captures
        self._noise_buf: torch.Tensor | None = None
        self.capacity = capacity  # positions a request may reach; the margin past it takes capture writes
        # one slot more than any span: a whole-buffer slice would be a second graph of the compiled greedy link
        length = capacity + CATCH_UP_WIDTH + 1
        self.fallback = unsupported(head, embed) if fast else "fast=False"
        self.net = HeadSteps(head, embed) if self.fallback else FastHead(head, embed, length, compile)
        self.cache = self.net.new_cache(length)
        self.device = self.cache.k.device
        self.spans = spans_for(capacity + CATCH_UP_WIDTH, HEAD_SMALLEST_SPAN)
        self.widths = tuple(w for w in (1, 2, 4, 8, 16, CATCH_UP_WIDTH))
        self.graphs, self._captured, self._pool = graphs, {}, None  # graphs share a pool, as StaticLM's
        self.seen = 0  # positions [0, seen) hold entries computed from true target features

    @property
    def graph_count(self) -> int:
        return len(self._captured)

    def reset(self) -> None:
        self.seen = 0

    def run(self, hidden: torch.Tensor, ids: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head forward at positions start..start+S-1; returns out_hidden [S, d] and draft logits [S, K]."""
        # hidden: [S, d], ids: [S] (the next tokens) -> [S, d], [S, K]
        outs = [self._padded(hidden[i : i + CATCH_UP_WIDTH], ids[i : i + CATCH_UP_WIDTH], start + i)
                for i in range(0, hidden.shape[0], CATCH_UP_WIDTH)]  # fmt: skip
        if len(outs) == 1:
            return outs[0]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _padded(self, hidden, ids, start: int):
        s = hidden.shape[0]
        w = next(w for w in self.widths if w >= s)
        span = next(sp for sp in self.spans if sp >= start + w)
        if not self.graphs:
            pos = torch.arange(start, start + w, device=self.device)
            pad = w - s
            out, logits = self._forward(
                torch.cat([hidden, hidden.new_zeros(pad, hidden.shape[1])]),
                torch.cat([ids, ids.new_zeros(pad)]),
                pos,
                span,
            )
            return out[:s], logits[:s]
        graph, h_buf, id_buf, pos_buf, out, logits = self._graph(w, span)
        h_buf[:s].copy_(hidden)
        id_buf[:s].copy_(ids)
        torch.arange(start, start + w, device=self.device, out=pos_buf)
        graph.replay()
        return out[:s].clone(), logits[:s].clone()  # outputs are overwritten by the next replay of any graph here

    def _forward(self, hidden, ids, pos, span):
        return self.net.step(hidden, ids, pos, self.cache, span)

    def _graph(self, w: int, span: int):
        if (w, span) not in self._captured:
            self._captured[w, span] = self._capture(w, span)
        return self._captured[w, span]

    def _capture(self, key, span: int):
        """Capture a forward of width `key`, a greedy chain (`("chain", k)`) or a sampled one
        (`("sample", k, params)`) at one span; warm-up and capture write only margin slots past `capacity`."""
        d, dtype = self.head.config.hidden_size, self.cache.k.dtype
        chain = isinstance(key, tuple)
        w = key[1] if chain else key
        h = torch.zeros(1 if chain else w, d, device=self.device, dtype=dtype)
        pos = torch.arange(self.capacity, self.capacity + max(w - 1 if chain else w, 1), device=self.device)
        first = torch.zeros(1, self.head.config.draft_vocab_size, device=self.device, dtype=dtype)
        if chain and key[0] == "sample":
            noise = self._noise()[:w]
            inputs, run = (h, first, pos, noise), lambda: self._sampled_chain(h, first, pos, span, w, key[2], noise)
        elif chain:
            inputs, run = (h, first, pos), lambda: self._chain(h, first, pos, span, w)
        else:
            ids = torch.zeros(w, dtype=torch.long, device=self.device)
            inputs, run = (h, ids, pos), lambda: self._forward(h, ids, pos, span)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = run()
        self._pool = self._pool or graph.pool()
        return (graph, *inputs, *(out if isinstance(out, tuple) else (out,)))

    def chain(self, hidden: torch.Tensor, logits: torch.Tensor, start: int, k: int) -> torch.Tensor:
        """Greedy: k drafts (target ids) from a first step's (out_hidden [1, d], logits [1, K]), the
        chained steps at positions start..start+k-2: one graph replay for the whole chain on CUDA."""
        span = next(sp for sp in self.spans if sp >= start + k)
        if not self.graphs:
            return self._chain(hidden, logits, torch.arange(start, start + k - 1, device=self.device), span, k)
        graph, h_buf, l_buf, pos_buf, tokens = self._graph(("chain", k), span)
        h_buf.copy_(hidden)
        l_buf.copy_(logits)
        torch.arange(start, start + pos_buf.shape[0], device=self.device, out=pos_buf)  # k = 1 reads none
        graph.replay()
        return tokens.clone()

    def _noise(self) -> torch.Tensor:
        """The exponential noise of sampled chains, [γ, V]: one buffer that every sampled graph reads."""
        if self._noise_buf is None:
            self._noise_buf = torch.ones(self.gamma, self.head.config.vocab_size, device=self.device)
        return self._noise_buf

    def sampled_chain(self, hidden, logits, start: int, k: int, params: SamplingParams, generator=None):
        """Sampling: k drafts (target ids) and the processed distributions [k, V] they were drawn from,
        from a first step's (out_hidden [1, d], logits [1, K]); one graph replay on CUDA. The draws are
        sampling.sample's exponential race over noise drawn here, outside the graph, from `generator`."""
        span = next(sp for sp in self.spans if sp >= start + k)
        if not self.graphs:
            noise = torch.empty(k, self.head.config.vocab_size, device=self.device).exponential_(1, generator=generator)
            pos = torch.arange(start, start + k - 1, device=self.device)
            return self._sampled_chain(hidden, logits, pos, span, k, params, noise)
        graph, h_buf, l_buf, pos_buf, noise, tokens, probs = self._graph(("sample", k, params), span)
        h_buf.copy_(hidden)
        l_buf.copy_(logits)
        torch.arange(start, start + pos_buf.shape[0], device=self.device, out=pos_buf)
        noise.exponential_(1, generator=generator)
        graph.replay()
        return tokens.clone(), probs.clone()

    def _sampled_chain(self, hidden, logits, pos, span: int, k: int, params: SamplingParams, noise):
        # hidden: [1, d], logits: [1, K], pos: [k-1], noise: [k, V] -> tokens [k], probs [k, V]
        tokens, probs = [], []
        for j in range(k):
            p = logits_to_probs(self.head.full_vocab_logits(logits.float()), params)  # [1, V]
            token = race(p, noise[j : j + 1])  # [1]: a draw from p
            tokens.append(token)
            probs.append(p)
            if j < k - 1:
                hidden, logits = self.net.step(hidden, token, pos[j : j + 1], self.cache, span)
        return torch.cat(tokens), torch.cat(probs)

    def _chain(self, hidden, logits, pos, span: int, k: int) -> torch.Tensor:
        # hidden: [1, d], logits: [1, K], pos: [k-1] -> tokens [k] (target ids)
        token = self.net.pick(logits)
        tokens = [token]
        for j in range(k - 1):
            hidden, token = self.net.greedy_step(hidden, token, pos[j : j + 1], self.cache, span)
            tokens.append(token)
        return torch.cat(tokens)

    @torch.inference_mode()
    def warmup(self) -> None:
        if self.graphs:
            chains = [
                ("chain", k) if self.params.greedy else ("sample", k, self.params) for k in range(1, self.gamma + 1)
            ]
            for key in [*self.widths, *chains]:
                for span in self.spans:
                    self._graph(key, span)

    @torch.inference_mode()
    def step_seconds(self, reps: int = 20) -> float:
        """Median seconds of one chained draft step (width 1), for profiles and the bench headline."""
        d = self.head.config.hidden_size
        h = torch.zeros(1, d, device=self.device, dtype=self.cache.k.dtype)
        ids = torch.zeros(1, dtype=torch.long, device=self.device)
        times = []
        for _ in range(reps + 1):
            watch = Stopwatch(self.device)
            self.run(h, ids, self.capacity - 1)
            watch.mark("step")
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(watch.durations()["step"])
        return statistics.median(times[1:])


_LAST_HIDDEN: list = []  # [(target, ids, hidden states)]: every head of an ensemble reads the same


def target_hidden_states(target, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The target's hidden states over `ids` [1, N], computed once for all the heads that ask in turn
    (the entry holds the target itself, so a later model cannot be mistaken for it)."""
    if _LAST_HIDDEN and _LAST_HIDDEN[0][0] is target and torch.equal(_LAST_HIDDEN[0][1], ids):
        return _LAST_HIDDEN[0][2]
    _LAST_HIDDEN.clear()
    _LAST_HIDDEN.append((target, ids, target(input_ids=ids, output_hidden_states=True).hidden_states))
    return _LAST_HIDDEN[0][2]


def forget_hidden_states() -> None:
    """Drop the shared entry (and the target it holds), e.g. when a log is written."""
    _LAST_HIDDEN.clear()


class HeadArm(Arm):
    """Drafts with an EAGLE-3 head over the target's features; proposes only draft-vocabulary tokens."""

    kind = "head"

    def __init__(self, name: str, head, embed, vocab_size: int, gamma: int = 4):
        self.name, self.head, self.embed, self.vocab_size, self.gamma = name, head, embed, vocab_size, gamma
        self.feature_layers = tuple(head.config.feature_layers)
        self.rt: HeadRuntime | None = None

    def runtime(self, engine) -> HeadRuntime:
        capacity = engine.max_len or engine.max_context
        graphs = engine.fast and engine.device.type == "cuda"
        args = (capacity, graphs, self.gamma, engine.fast, engine.compile, engine.params)
        return HeadRuntime(self.head, self.embed, engine.target, *args)

    def bind(self, runtime) -> None:
        self.rt = runtime

    def reset(self) -> None:
        self.rt.reset()

    def _catch_up(self, seq: Sequence, end: int):
        """Feed true features for positions seen..end-1; the outputs of those positions."""
        rt = self.rt
        feats = rt.target_lm.features[rt.seen : end]
        out = rt.run(self.head.fuse(feats), seq.ids[rt.seen + 1 : end + 1], rt.seen)
        rt.seen = end
        return out

    def _probs(self, logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
        return logits_to_probs(self.head.full_vocab_logits(logits.float()), params)

    @torch.inference_mode()
    def draft(self, seq: Sequence, k: int, params: SamplingParams, early_stop: float = 0.0, generator=None):
        P = seq.length
        if k <= 0 or P - 1 <= self.rt.seen:  # nothing drafted, or no target feature yet (a 1-token prompt)
            return seq.ids.new_empty(0), torch.zeros(0, self.vocab_size, device=seq.ids.device)
        out, logits = self._catch_up(seq, P - 1)
        if params.greedy and early_stop <= 0:  # the whole chain in one go (one graph replay on CUDA)
            tokens = self.rt.chain(out[-1:], logits[-1:], P - 1, k)
            return tokens, torch.nn.functional.one_hot(tokens, self.vocab_size).float()
        if early_stop <= 0:  # sampled: the whole chain in one go too
            return self.rt.sampled_chain(out[-1:], logits[-1:], P - 1, k, params, generator)
        hidden, logits = out[-1:], logits[-1]
        tokens, probs = [], []
        for i in range(k):
            token, prob = pick(self.head.full_vocab_logits(logits.float()), params, generator)
            tokens.append(token)
            probs.append(prob)
            if i == k - 1 or (early_stop > 0 and logits.float().softmax(-1).max().item() < early_stop):  # opt-in sync
                break
            hidden, step_logits = self.rt.run(hidden, token.view(1), P - 1 + i)
            logits = step_logits[0]
        return torch.stack(tokens), torch.stack(probs)

    @torch.inference_mode()
    def score(self, seq: Sequence, start: int, params: SamplingParams) -> torch.Tensor:
        """First-step distributions for positions start.. of the committed sequence (one forward)."""
        rows = seq.length - start
        first = start - 2  # the head position that predicts x_start
        if first < self.rt.seen or first < 0:
            return torch.zeros(rows, self.vocab_size, device=seq.ids.device)
        _, logits = self._catch_up(seq, seq.length - 2)
        return self._probs(logits[-rows:], params)

    @torch.inference_mode()
    def block_matches(self, seq: list[int], prompt_len: int, target) -> list[list[bool]]:
        """Chains of γ drafts from every committed length, from one target forward and γ unrolled head
        passes (the training-time-test unroll; exact while a chain matches the committed tokens)."""
        ids = torch.tensor([seq], device=self.head.fc.weight.device)
        hidden_states = target_hidden_states(target, ids[:, :-1])
        feats = torch.cat([hidden_states[i] for i in self.feature_layers], -1)  # [1, N-1, 3d]
        outs = self.head.unroll(feats, self.embed(ids[:, 1:]), torch.ones_like(ids[:, 1:]), self.gamma)
        preds = [self.head.to_target(self.head.logits(o).argmax(-1))[0].tolist() for o in outs]  # row r: x_{r+2}
        n = len(seq)
        return [[] if p < 2 else [preds[k][p - 2 + k] == seq[p + k] for k in range(min(self.gamma, n - p))]
                for p in range(prompt_len, n)]  # fmt: skip
