"""The fast path: KV buffers sized once and written by position, forwards replayed as CUDA graphs.

gpt-fast's layout over any Hugging Face causal LM: each forward writes its keys/values at the
positions it is given and attends through an explicit mask `slot <= position`, so a rejected
draft needs no rollback (stale slots are masked, then overwritten) and every forward of a given
width has the same shapes and addresses. On CUDA each width is captured once as a graph and
replayed; widths are padded up to a captured bucket (pad tokens write slots past the sequence,
which nothing attends before they are overwritten). On CPU the same code runs eagerly, which is
what the CPU tests check against the DynamicCache path.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
from transformers.cache_utils import Cache

from metasd_train.decoding.cache import cache_kwarg
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
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise NotImplementedError("PositionCache is indexed by explicit positions")


def default_widths(max_gamma: int) -> tuple[int, ...]:
    """Every verify/draft width up to max_gamma+1, then buckets for catch-up and idle scoring."""
    return tuple(sorted(set(range(1, max_gamma + 2)) | {8, 16, 32}))


class StaticLM:
    """CachedLM's interface (forward / rewind / seen) over a PositionCache; graphs on CUDA."""

    def __init__(self, model, vocab_size: int, max_len: int, widths: tuple[int, ...], graphs: bool | None = None):
        self.model, self.vocab_size, self.max_len = model, vocab_size, max_len
        self.widths = tuple(sorted(widths))
        self.device = next(model.parameters()).device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        self._kw = cache_kwarg(model)
        length = max_len + self.widths[-1]  # the margin takes pad and capture writes past max_len
        with torch.inference_mode():
            self.cache = PositionCache(model.config.num_hidden_layers, length)
            self._slots = torch.arange(length, device=self.device)
            self._base = {w: torch.arange(w, device=self.device) for w in self.widths}
        self._captured: dict[int, tuple] = {}  # width -> (graph, ids, pos, logits)
        self.seen = 0

    def reset(self) -> None:
        self.seen = 0  # slots are overwritten before they are attended

    def rewind(self, length: int) -> None:
        self.seen = min(self.seen, length)

    def _run(self, ids: torch.Tensor, pos: torch.Tensor, hidden: bool = False):
        # ids, pos: [S] -> model output (logits [1, S, V_d])
        self.cache.positions = pos
        dtype = next(self.model.parameters()).dtype
        allowed = self._slots[None, :] <= pos[:, None]  # [S, length]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(~allowed, torch.finfo(dtype).min)
        with self._attention():
            return self.model(
                input_ids=ids.view(1, -1),
                position_ids=pos.view(1, -1),
                attention_mask=mask[None, None],
                use_cache=True,
                output_hidden_states=hidden,
                **{self._kw: self.cache},
            )

    def _attention(self):
        """On CUDA, memory-efficient SDPA: with a mask over the whole buffer, PyTorch's default pick
        (cuDNN) took 36 us a layer on an H100 for 5 queries x 2048 slots, a quarter of a verify."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

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
            out = self._run(ids, pos, hidden=True)
            self.seen += n
            return align_vocab(out.logits[0].float(), self.vocab_size), out.hidden_states[-1][0]
        chunks = []
        for start in range(0, n, self.widths[-1]):
            chunks.append(self._forward_padded(ids[start : start + self.widths[-1]]))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def _forward_padded(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [s] with s <= max width -> logits [s, V] float32
        s = ids.shape[0]
        w = next(w for w in self.widths if w >= s)
        if self.graphs:
            graph, ids_buf, pos_buf, logits = self._graph(w)
            ids_buf[:s].copy_(ids)
            torch.add(self._base[w], self.seen, out=pos_buf)
            graph.replay()
        else:
            ids_buf = torch.cat([ids, ids.new_zeros(w - s)])
            logits = self._run(ids_buf, self._base[w] + self.seen).logits[0]
        self.seen += s
        return align_vocab(logits[:s].float(), self.vocab_size)  # a copy: the graph's buffer is reused

    def _graph(self, w: int) -> tuple:
        if w not in self._captured:
            self._captured[w] = self._capture(w)
        return self._captured[w]

    def _capture(self, w: int) -> tuple:
        """Capture the width-w forward; warm-up and capture write only margin slots past max_len."""
        ids = torch.zeros(w, dtype=torch.long, device=self.device)
        pos = self._base[w] + self.max_len
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(ids, pos)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._run(ids, pos).logits[0]
        return graph, ids, pos, logits

    def warmup(self) -> None:
        """Capture every width now, so that no request pays for it."""
        if self.graphs:
            with torch.inference_mode():
                for w in self.widths:
                    self._graph(w)
