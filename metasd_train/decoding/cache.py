"""A causal LM with its own KV cache and a count of the positions it has seen.

Rejected positions are cropped, never recomputed; a model that sat out some rounds catches up by
feeding every unseen token in one forward. Works across transformers 5.x: the cache argument was
renamed from `past_key_values` to `cache` in 5.24, and DynamicCache.crop takes a negative count.

Target features for draft heads that read the target's hidden states (EAGLE-style): a forward can
also write, for each position it feeds, chosen entries of HF's `hidden_states` into a buffer indexed
by position (`feature_layers`); the static path (static_cache.py) shares these helpers.
"""

from __future__ import annotations

import inspect

import torch

from metasd_train.decoding.sampling import align_vocab
from metasd_train.errors import UserError


def cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def feature_indices(layers, n_layers: int) -> tuple[int, ...]:
    """`layers` as non-negative indices into HF's `hidden_states` (0 = embeddings .. n_layers = after the final norm)."""
    out = []
    for i in layers or ():
        if not -(n_layers + 1) <= i <= n_layers:
            raise UserError(f"feature_layers has {i} but the model's hidden states are 0..{n_layers} (0 = embeddings)")
        out.append(int(i) % (n_layers + 1))
    return tuple(out)


def feature_buffer(rows: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Zeros [rows, width] in `like`'s dtype and device; a normal tensor even under inference mode,
    so that a draft head may read it where autograd is on (training, tests)."""
    with torch.inference_mode(False):
        return torch.zeros(rows, width, dtype=like.dtype, device=like.device)


def gather_features(hidden_states, layers: tuple[int, ...]) -> torch.Tensor:
    """The chosen hidden states side by side: [S, len(layers) * d] from HF's tuple of [1, S, d]."""
    return torch.cat([hidden_states[i][0] for i in layers], dim=-1)


class CachedLM:
    """Wraps a Hugging Face causal LM; `seen` positions of the sequence are in its cache.

    Args:
        model: any HF causal LM (or a peft model over one).
        vocab_size: logits are cut or padded to the target's vocabulary.
        feature_layers: indices into HF's `hidden_states`; when set, every forward also writes, for each
            position p it feeds, their concatenation into `features[p]` ([capacity, len * d], model dtype,
            grown as needed; rows at or past `seen` are stale).
    """

    def __init__(self, model, vocab_size: int, feature_layers=None):
        from transformers import DynamicCache

        self.model = model
        self.vocab_size = vocab_size
        self._kw = cache_kwarg(model)
        self._new_cache = lambda: DynamicCache(config=model.config)
        self.cache = self._new_cache()
        self.seen = 0
        self.feature_layers = feature_indices(feature_layers, model.config.num_hidden_layers)
        self.features: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        self.cache = self._new_cache()
        self.seen = 0

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, hidden: bool = False):
        """Feed positions seen..seen+S-1; return float32 logits [S, V] (and the last hidden states)."""
        # ids: [S] -> logits [S, V], hidden [S, H] | None
        states = hidden or bool(self.feature_layers)
        out = self.model(
            input_ids=ids.view(1, -1), use_cache=True, output_hidden_states=states, **{self._kw: self.cache}
        )
        if self.feature_layers:
            self._write_features(gather_features(out.hidden_states, self.feature_layers))
        self.seen += ids.shape[0]
        logits = align_vocab(out.logits[0].float(), self.vocab_size)
        return (logits, out.hidden_states[-1][0]) if hidden else logits

    def _write_features(self, rows: torch.Tensor) -> None:
        # rows: [S, F] for positions seen..seen+S-1
        end, old = self.seen + rows.shape[0], self.features
        capacity = 0 if old is None else old.shape[0]
        if capacity < end:
            self.features = feature_buffer(max(end, 64, 2 * capacity), rows.shape[1], rows)
            if old is not None:
                self.features[:capacity] = old
        self.features[self.seen : end] = rows

    def rewind(self, length: int) -> None:
        """Keep only the first `length` positions (no-op if it has seen fewer)."""
        drop = self.seen - length
        if drop > 0:
            self.cache.crop(-drop)
            self.seen = length

    def cached_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) per layer, [1, H, seen, D]: for tests of the bookkeeping."""
        return [(layer.keys[:, :, : self.seen], layer.values[:, :, : self.seen]) for layer in self.cache.layers]
