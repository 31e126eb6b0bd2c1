"""The fast path: KV buffers sized once and written by position, forwards replayed as CUDA graphs.

gpt-fast's layout over a Hugging Face causal LM: each forward writes its keys/values at the
positions it is given and attends through an explicit mask `slot <= position`, so a rejected
draft needs no rollback (stale slots are masked, then overwritten) and every forward of a given
width has the same shapes and addresses. On CUDA each width is captured once as a graph and
replayed; widths are padded up to a captured bucket (pad tokens write slots past the sequence,
which nothing attends before they are overwritten). On CPU the same code runs eagerly, which is
what the CPU tests check against the DynamicCache path.

The forward itself is fastmodel.FastModel for the Llama family (fused weights, fewer kernels) and
the model's own over a PositionCache (`HFForward`) for anything else.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers.cache_utils import Cache

from metasd_train.decoding.cache import cache_kwarg, feature_buffer, feature_indices, gather_features
from metasd_train.decoding.fastmodel import FastModel, unsupported
from metasd_train.decoding.sampling import align_vocab
from metasd_train.errors import UserError


class PositionCache(Cache):
    """Per-layer key/value buffers [1, H, length, D]; `update` writes at `self.positions`.

    HF's attention layers only call `update`; the mask is passed in 4D, so mask creation only asks
    which layers are full attention (`layers`). Tested on transformers 5.17 and 5.24.
    """

    is_compileable = True

    def __init__(self, n_layers: int, length: int):  # no super().__init__: no HF cache layers needed
        self.length = length
        self.layers = [SimpleNamespace(is_sliding=False) for _ in range(n_layers)]
        self.positions: torch.Tensor | None = None  # [S] long, set before each forward
        self.span = length  # slots attended by the next forward (a prefix of the buffers)
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        # key_states, value_states: [1, H, S, D] -> full buffers [1, H, length, D]
        if self.keys[layer_idx] is None:
            shape = (*key_states.shape[:2], self.length, key_states.shape[-1])
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros((*shape[:3], value_states.shape[-1]))
        self.keys[layer_idx].index_copy_(2, self.positions, key_states)
        self.values[layer_idx].index_copy_(2, self.positions, value_states)
        return self.keys[layer_idx][:, :, : self.span], self.values[layer_idx][:, :, : self.span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise NotImplementedError("PositionCache is indexed by explicit positions")


def spans_for(length: int, smallest: int = 256) -> tuple[int, ...]:
    """Attended prefixes: `smallest`, twice that, ... then `length` itself. A power of two s that
    `length` exceeds by at most a quarter (length <= 1.25 s) is left out: 2048 below 2080 would add
    a graph per width for 32 slots."""
    spans, s = [], smallest
    while s < 0.8 * length:
        spans.append(s)
        s *= 2
    return (*spans, length)


def default_widths(max_gamma: int) -> tuple[int, ...]:
    """Every verify/draft width up to max_gamma+1, then buckets for catch-up and idle scoring."""
    return tuple(sorted(set(range(1, max_gamma + 2)) | {8, 16, 32}))


def verify_widths(max_block: int) -> tuple[int, ...]:
    """A target's widths: it only ever verifies a round (1..max_block tokens; the prefill runs
    uncaptured), so each width is captured exactly and none is captured for catch-up."""
    return tuple(range(1, max_block + 1))


def catch_up_widths(widest: int = 32, graphs: bool = True) -> tuple[int, ...]:
    """A drafter model's widths: single draft steps, then catch-ups on the tokens of the rounds it
    did not see. With graphs (CUDA) a catch-up is padded up to a power of two: a few pad positions
    cost next to nothing on a launch-bound forward, and every width is one more compile and set of
    graphs at start-up. Without graphs nothing is captured, so every width runs exactly (a pad
    position costs real compute on a CPU)."""
    if not graphs:
        return tuple(range(1, widest + 1))
    return tuple(1 << i for i in range(widest.bit_length()) if 1 << i <= widest)


class HFForward:
    """The model's own forward over a PositionCache: any HF causal LM, nothing fused."""

    def __init__(self, model, length: int, feature_layers=None):
        self.model, self._kw = model, cache_kwarg(model)
        n_layers = model.config.num_hidden_layers
        self.cache = PositionCache(n_layers, length)
        param = next(model.parameters())
        self.slots = torch.arange(length, device=param.device)
        self.feature_layers = feature_indices(feature_layers, n_layers)
        width = len(self.feature_layers) * model.config.hidden_size
        self.features = feature_buffer(length, width, param) if self.feature_layers else None

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, span: int, hidden: bool = False):
        """Logits [S, V] (model dtype) of `ids` at positions `pos` attending slots [0, span); last hidden states if asked."""
        # ids, pos: [S] -> logits [S, V], hidden [S, H] | None
        self.cache.positions, self.cache.span = pos, span
        dtype = next(self.model.parameters()).dtype
        allowed = self.slots[None, :span] <= pos[:, None]  # [S, span]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=pos.device).masked_fill(~allowed, torch.finfo(dtype).min)
        out = self.model(
            input_ids=ids.view(1, -1),
            position_ids=pos.view(1, -1),
            attention_mask=mask[None, None],
            use_cache=True,
            output_hidden_states=hidden or self.features is not None,
            **{self._kw: self.cache},
        )
        if self.features is not None:
            self.features.index_copy_(0, pos, gather_features(out.hidden_states, self.feature_layers))
        return out.logits[0], (out.hidden_states[-1][0] if hidden else None)


class StaticLM:
    """CachedLM's interface (forward / rewind / reset / seen / features) over static buffers; graphs on CUDA.

    A forward attends only the smallest span (256, 512, ...) that holds its positions, so short
    sequences do not pay for attention over the whole buffer: one graph per (width, span).

    Args:
        model: an HF causal LM (or a peft model over one).
        vocab_size: logits are cut or padded to the target's vocabulary.
        max_len: positions the sequence may reach; the buffers add a margin of the widest width.
        widths: forward widths captured as graphs; others are padded up, longer ones chunked.
        fast_forward: use fastmodel.FastModel when it supports the model (`fallback` says why not).
        compile: fastmodel.COMPILE key for the fast forward ("none" | "fused" | "static" | "layer" | ...).
        feature_layers: indices into HF's `hidden_states`; every forward (graphed or not) writes, at
            each position it feeds, their concatenation into `features` [max_len + margin, len * d].
    """

    def __init__(
        self,
        model,
        vocab_size: int,
        max_len: int,
        widths: tuple[int, ...],
        fast_forward: bool = True,
        compile: str = "static",
        feature_layers=None,
    ):
        self.model, self.vocab_size, self.max_len = model, vocab_size, max_len
        self.widths = tuple(sorted(widths))
        self.device = next(model.parameters()).device
        self.graphs = self.device.type == "cuda"  # callers may turn it off (tests, benchmarks)
        self.fallback = unsupported(model) if fast_forward else "fast_forward=False"
        length = max_len + self.widths[-1]  # the margin takes pad and capture writes past max_len
        with torch.inference_mode():
            if self.fallback is None:
                self.net = FastModel(model, length, compile, feature_layers)
            else:
                self.net = HFForward(model, length, feature_layers)
            self._base = {w: torch.arange(w, device=self.device) for w in self.widths}
        self.spans = spans_for(length)
        self._captured: dict[tuple[int, int], tuple] = {}  # (width, span) -> (graph, ids, pos, logits)
        self._pool = None  # the memory pool all of this cache's graphs share (see _capture)
        self.seen = 0

    @property
    def features(self) -> torch.Tensor | None:
        return self.net.features

    @property
    def graph_count(self) -> int:
        return len(self._captured)

    def reset(self) -> None:
        self.seen = 0  # slots are overwritten before they are attended

    def rewind(self, length: int) -> None:
        self.seen = min(self.seen, length)

    def _span(self, end: int) -> int:
        return next(s for s in self.spans if s >= end)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, hidden: bool = False):
        """Feed positions seen..seen+S-1; return float32 logits [S, V] (and the last hidden states)."""
        # ids: [S] -> logits [S, V], hidden [S, H] | None
        n = ids.shape[0]
        if self.seen + n > self.max_len:
            raise UserError(
                f"the sequence would pass the static cache's {self.max_len} positions; "
                "raise decode.max_len (or use fast=false)"
            )
        if hidden:  # the prefill: one eager forward of any length
            pos = torch.arange(self.seen, self.seen + n, device=self.device)
            logits, last = self.net.forward(ids, pos, self._span(self.seen + n), hidden=True)
            self.seen += n
            return align_vocab(logits.float(), self.vocab_size), last
        chunks = []
        for start in range(0, n, self.widths[-1]):
            chunks.append(self._forward_padded(ids[start : start + self.widths[-1]]))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def _forward_padded(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [s] with s <= max width -> logits [s, V] float32
        s = ids.shape[0]
        w = next(w for w in self.widths if w >= s)
        span = self._span(self.seen + w)  # every query position, pads included, lies inside the span
        if self.graphs:
            graph, ids_buf, pos_buf, logits = self._graph(w, span)
            ids_buf[:s].copy_(ids)
            torch.add(self._base[w], self.seen, out=pos_buf)
            graph.replay()
        else:
            ids_buf = torch.cat([ids, ids.new_zeros(w - s)])
            logits = self.net.forward(ids_buf, self._base[w] + self.seen, span)[0]
        self.seen += s
        # a copy even in fp32: the output buffer is overwritten by the next replay of any of this cache's graphs
        return align_vocab(logits[:s].to(torch.float32, copy=True), self.vocab_size)

    def _graph(self, w: int, span: int) -> tuple:
        if (w, span) not in self._captured:
            self._captured[w, span] = self._capture(w, span)
        return self._captured[w, span]

    def _capture(self, w: int, span: int) -> tuple:
        """Capture one forward shape. Warm-up and capture write only margin slots past max_len (the
        positions are a buffer, so replays write where they are told). The graphs share one memory
        pool: they replay one at a time and every caller copies a graph's output out at once. Every
        input and long-lived buffer is allocated before capture, outside the pool; a tensor made
        during a capture and kept past it would share memory with later graphs' intermediates."""
        ids = torch.zeros(w, dtype=torch.long, device=self.device)
        pos = self._base[w] + self.max_len
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # also where torch.compile compiles and autotunes, outside the capture
                self.net.forward(ids, pos, span)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self.net.forward(ids, pos, span)[0]
        self._pool = self._pool or graph.pool()
        return graph, ids, pos, logits

    def warmup(self) -> None:
        """Capture every (width, span) now, so that no request pays for it."""
        if self.graphs:
            with torch.inference_mode():
                for w in self.widths:
                    for span in self.spans:
                        self._graph(w, span)
