"""EAGLE-3 draft head: one decoder layer over fused target features, with a reduced draft vocabulary.

Parameter names follow SpecForge/SGLang's `LlamaForCausalLMEagle3` (`fc`, `midlayer.*`, `norm`,
`lm_head`, buffers `d2t`/`t2d`), so a saved head loads there unchanged. The target's input
embedding is shared, never copied: every method takes token *embeddings* computed by the caller.

Indexing: the target's hidden state at position s (it has consumed x_s) plus the embedding of
x_{s+1}, fed at position s, predict x_{s+2}. A chained step feeds (out_hidden of position s,
embedding of the drafted x_{s+2}) at position s+1 and predicts x_{s+3}.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from metasd_train.errors import UserError
from metasd_train.models.draft_vocab import draft_vocab
from metasd_train.models.head_layer import ACTIVATIONS, MidLayer, RMSNorm, attend

QKV_BIAS_BY_MODEL_TYPE = {"qwen2": True, "qwen2_moe": True}  # families whose configs have no `attention_bias`


@dataclass(frozen=True)
class HeadConfig:
    """Shapes of a draft head; `feature_layers` index HF's `hidden_states` tuple (0 = embeddings)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    attention_bias: bool
    hidden_act: str
    vocab_size: int
    draft_vocab_size: int
    feature_layers: tuple[int, int, int]
    max_position_embeddings: int = 4096

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if not 1 <= self.draft_vocab_size <= self.vocab_size:
            raise UserError(f"draft_vocab_size={self.draft_vocab_size}; choose 1..{self.vocab_size} (the target's)")
        if self.hidden_act not in ACTIVATIONS:
            raise UserError(f"hidden_act={self.hidden_act!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
        if len(self.feature_layers) != 3:
            raise UserError(f"feature_layers={self.feature_layers} must name exactly 3 hidden states")
        object.__setattr__(self, "feature_layers", tuple(int(i) for i in self.feature_layers))

    @classmethod
    def from_target(
        cls, target_config, draft_vocab_size: int, feature_layers=None, attention_bias: bool | None = None
    ) -> HeadConfig:
        """Shapes copied from a HF target config; `attention_bias=False` forces bias-free q/k/v."""
        c = target_config
        n_layers = c.num_hidden_layers
        default = tuple(min(max(i, 1), n_layers) for i in (2, n_layers // 2, n_layers - 2))  # clamped for tiny targets
        layers = tuple(feature_layers) if feature_layers is not None else default
        bad = [i for i in layers if not 1 <= i <= n_layers]
        if bad:
            raise UserError(f"feature_layers={list(layers)}: {bad} out of range; choose 1..{n_layers} (target layers)")
        if attention_bias is None:
            attention_bias = getattr(c, "attention_bias", None)
        if attention_bias is None:
            attention_bias = QKV_BIAS_BY_MODEL_TYPE.get(getattr(c, "model_type", ""), False)
        return cls(
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            rms_norm_eps=c.rms_norm_eps,
            rope_theta=_rope_theta(c),
            attention_bias=bool(attention_bias),
            hidden_act=getattr(c, "hidden_act", "silu"),
            vocab_size=c.vocab_size,
            draft_vocab_size=draft_vocab_size,
            feature_layers=layers,
            max_position_embeddings=getattr(c, "max_position_embeddings", None) or 4096,
        )


def _rope_theta(c) -> float:
    """`rope_theta` from transformers < 5 (`rope_theta`, `rope_scaling`) or >= 5 (`rope_parameters`)."""
    params = dict(getattr(c, "rope_parameters", None) or {})
    scaling = dict(getattr(c, "rope_scaling", None) or {})
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise UserError(f"the target uses RoPE type {kind!r}; draft heads support only 'default'")
    theta = getattr(c, "rope_theta", None) or params.get("rope_theta")
    if theta is None:
        raise UserError(f"{type(c).__name__} has neither rope_theta nor rope_parameters['rope_theta']")
    return float(theta)


@dataclass
class HeadCache:
    """Key/value buffers [1, Hkv, max_len, hd], written by position, never rolled back."""

    k: torch.Tensor
    v: torch.Tensor


class DraftHead(nn.Module):
    """EAGLE-3 head: `fc` fuses 3 target hidden states, `midlayer` drafts, `lm_head` scores K tokens."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.fc = nn.Linear(3 * d, d, bias=False)
        self.midlayer = MidLayer(config)
        self.norm = RMSNorm(d, config.rms_norm_eps)
        self.lm_head = nn.Linear(d, config.draft_vocab_size, bias=False)
        self.register_buffer("d2t", torch.zeros(config.draft_vocab_size, dtype=torch.long))  # target = i + d2t[i]
        self.register_buffer("t2d", torch.zeros(config.vocab_size, dtype=torch.bool))  # in the draft vocab

    def set_vocab(self, d2t: torch.Tensor, t2d: torch.Tensor) -> None:
        """Install a draft vocabulary (see `metasd_train.models.draft_vocab.draft_vocab`)."""
        if d2t.shape != self.d2t.shape or t2d.shape != self.t2d.shape:
            raise UserError(f"draft vocab shapes {tuple(d2t.shape)}, {tuple(t2d.shape)} do not fit this head")
        self.d2t.copy_(d2t)
        self.t2d.copy_(t2d)

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """Project the 3 concatenated target hidden states to the head's width."""
        # features: [..., 3d] -> [..., d]
        return self.fc(features.to(self.fc.weight.dtype))

    def logits(self, out_hidden: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits of the midlayer output."""
        # out_hidden: [..., d] -> [..., K]
        return self.lm_head(self.norm(out_hidden))

    def new_cache(self, max_len: int, device=None, dtype=None) -> HeadCache:
        """Zeroed KV buffers sized once (zeros, not empty: a masked NaN would still poison SDPA)."""
        c, w = self.config, self.fc.weight
        shape = (1, c.num_key_value_heads, max_len, c.head_dim)
        make = partial(torch.zeros, shape, device=device or w.device, dtype=dtype or w.dtype)
        return HeadCache(k=make(), v=make())

    def step(self, hidden, embeds, positions, cache: HeadCache, span: int):
        """One decoding forward on the static cache; CUDA-graph capturable for a fixed (S, span).

        Args:
            hidden: [S, d], `fuse(features)` or this head's previous `out_hidden`.
            embeds: [S, d], target embeddings of the *next* tokens.
            positions: [S] long, all < span; keys/values are written there before attending.
            cache: from `new_cache`.
            span: slots [0, span) are attended through the mask `slot <= position`.

        Returns:
            out_hidden [S, d] (midlayer output, fed back when chaining) and logits [S, K].
        """
        q, k, v = self.midlayer.qkv(hidden[None], embeds[None], positions)
        cache.k.index_copy_(2, positions, k.to(cache.k.dtype))
        cache.v.index_copy_(2, positions, v.to(cache.v.dtype))
        slots = torch.arange(span, device=positions.device)
        mask = slots[None, :] <= positions[:, None]  # [S, span]
        attn = attend(q, cache.k[:, :, :span], cache.v[:, :, :span], mask)
        out = self.midlayer.finish(hidden[None], attn)[0]
        return out, self.logits(out)

    def unroll(self, features, embeds, attention_mask, steps: int) -> list[torch.Tensor]:
        """Training-time test: `steps` chained passes over whole sequences, masked as decoding sees them.

        Step k's row t is the k-th draft of the chain started at position t-k+1 (fed the ground-truth
        next-token embeddings), so every step predicts x_{t+2} at row t.

        Args:
            features: [B, T, 3d] target hidden states; embeds: [B, T, d] embeddings of x_{t+1};
            attention_mask: [B, T] (0 = padding); steps: unroll depth.

        Returns:
            `steps` midlayer outputs, each [B, T, d] (logits via `self.logits`).
        """
        t = features.shape[1]
        positions = torch.arange(t, device=features.device)
        hidden, keys, values, outs = self.fuse(features), [], [], []
        for k in range(1, steps + 1):
            if k > 1:  # row t continues the chain of row t-1 one position later
                hidden = F.pad(outs[-1][:, :-1], (0, 0, 1, 0))
            q, key, value = self.midlayer.qkv(hidden, embeds, positions)
            keys.append(key)
            values.append(value)
            mask = ttt_mask(attention_mask.bool(), k)
            outs.append(self.midlayer.finish(hidden, attend(q, torch.cat(keys, 2), torch.cat(values, 2), mask)))
        return outs

    def to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary ids -> target ids."""
        return draft_ids + self.d2t[draft_ids]

    def full_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Scatter draft logits [S, K] into [S, V], -inf outside the draft vocabulary."""
        ids = torch.arange(self.d2t.shape[0], device=logits.device) + self.d2t
        out = logits.new_full((*logits.shape[:-1], self.t2d.shape[0]), float("-inf"))
        return out.index_copy(-1, ids, logits)


def ttt_mask(attention_mask: torch.Tensor, k: int) -> torch.Tensor:
    """Step k's boolean mask over the keys of steps 1..k, concatenated in step order.

    Row t (the chain started at b = t-k+1) sees step-1 keys at positions s <= b and the step-j key
    at position b+j-1 for j = 2..k: exactly the slots the decoding cache holds at that draft.
    Padding keys are masked; each row always sees its own key, so no row is empty (no NaN).
    """
    # attention_mask: [B, T] bool -> [B, 1, T, k*T]
    t = attention_mask.shape[1]
    q = torch.arange(t, device=attention_mask.device)[:, None]
    s = torch.arange(t, device=attention_mask.device)[None, :]
    blocks = [s <= q - k + 1] + [s == q - k + j for j in range(2, k + 1)]
    mask = torch.cat(blocks, dim=-1)[None] & attention_mask.repeat(1, k)[:, None, :]
    own = F.pad(torch.eye(t, dtype=torch.bool, device=q.device), ((k - 1) * t, 0))
    return (mask | own)[:, None]


def build_head(target, draft_vocab_size: int, counts, eos_ids, feature_layers=None, seed: int = 0) -> DraftHead:
    """A fresh head for `target`: seeded N(0, 0.02) init, `lm_head` from the target's output rows.

    Args:
        target: HF causal LM; its embedding stays shared, its config gives the head's shapes.
        draft_vocab_size: K; counts: [V] token counts (`token_counts`); eos_ids: forced into the vocab.
        feature_layers: 3 indices into HF's `hidden_states` (default (2, L//2, L-2)).
    """
    config = HeadConfig.from_target(target.config, draft_vocab_size, feature_layers)
    d2t, t2d = draft_vocab(counts, draft_vocab_size, always=eos_ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = DraftHead(config)
        for module in head.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
    head.set_vocab(d2t, t2d)
    with torch.no_grad():
        rows = target.get_output_embeddings().weight[t2d.nonzero().squeeze(1).to(target.device)]
        head.lm_head.weight.copy_(rows.to(head.lm_head.weight.dtype).cpu())
    return head.to(device=target.device, dtype=target.dtype)
