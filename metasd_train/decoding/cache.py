"""A causal LM with its own KV cache and a count of the positions it has seen.

Rejected positions are cropped, never recomputed; a model that sat out some rounds catches up by
feeding every unseen token in one forward. Works across transformers 5.x: the cache argument was
renamed from `past_key_values` to `cache` in 5.24, and DynamicCache.crop takes a negative count.
"""

from __future__ import annotations

import inspect

import torch

from metasd_train.decoding.sampling import align_vocab


def cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class CachedLM:
    """Wraps a Hugging Face causal LM; `seen` positions of the sequence are in its cache."""

    def __init__(self, model, vocab_size: int):
        from transformers import DynamicCache

        self.model = model
        self.vocab_size = vocab_size  # logits are aligned to the target's vocabulary
        self._kw = cache_kwarg(model)
        self._new_cache = lambda: DynamicCache(config=model.config)
        self.cache = self._new_cache()
        self.seen = 0

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
        out = self.model(
            input_ids=ids.view(1, -1), use_cache=True, output_hidden_states=hidden, **{self._kw: self.cache}
        )
        self.seen += ids.shape[0]
        logits = align_vocab(out.logits[0].float(), self.vocab_size)
        return (logits, out.hidden_states[-1][0]) if hidden else logits

    def rewind(self, length: int) -> None:
        """Keep only the first `length` positions (no-op if it has seen fewer)."""
        drop = self.seen - length
        if drop > 0:
            self.cache.crop(-drop)
            self.seen = length

    def cached_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(keys, values) per layer, [1, H, seen, D]: for tests of the bookkeeping."""
        return [(layer.keys[:, :, : self.seen], layer.values[:, :, : self.seen]) for layer in self.cache.layers]
