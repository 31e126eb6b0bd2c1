"""A gpt-fast-shaped forward over a loaded Hugging Face Llama-family causal LM's weights.

One matmul for q/k/v (biases concatenated) and one for gate/up; RMSNorm, RoPE and SiLU*up written
out; keys and values written by position into buffers sized once; attention over a prefix (the span)
of those buffers through an explicit mask `slot <= position`. Grouped-query attention copies no keys:
the queries of the heads that share a key/value head are stacked along the query axis (and the mask
with them), so SDPA sees one head per key/value head.

A small model on a GPU is bound by how many kernels a forward launches, not by bytes, so the
elementwise work between matmuls can be fused by torch.compile (`COMPILE`): "fused" compiles small
pure functions over any number of tokens, "static" compiles the same functions once per width
(no symbolic reasoning over the token count: cheaper compiles and guards at start-up; the prefill,
any length, then runs them eagerly), "layer" compiles the whole decoder layer once per width (the
attended span stays dynamic in both). Models outside the family are refused by `unsupported` with a
reason, and the caller falls back to the model's own forward.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metasd_train.decoding.cache import feature_buffer, feature_indices
from metasd_train.decoding.fused_ops import PLAIN, Ops, attend
from metasd_train.errors import UserError

FAMILIES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM"})  # same layout; Qwen2 adds q/k/v biases


class Setting(NamedTuple):
    fuse: bool  # compile the small elementwise functions
    layer_mode: str | None  # compile each decoder layer per width with this inductor mode (None: don't)
    dynamic: bool = True  # the small functions: one compile over every token count, or one per width


COMPILE = {
    "none": Setting(False, None),
    "fused": Setting(True, None),
    "static": Setting(True, None, dynamic=False),
    "layer": Setting(True, "default"),
    "layer-autotune": Setting(True, "max-autotune-no-cudagraphs"),
}


def rope_theta(config) -> float | None:
    """The base of the default RoPE; None for any other rope type (scaled, partial, per layer type)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    if params and not ({"rope_type", "rope_theta"} & params.keys()):
        return None  # nested per layer type
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if kind != "default" or theta is None or params.get("partial_rotary_factor", 1.0) != 1.0:
        return None
    return float(theta)


def unsupported(model) -> str | None:
    """Why the fast forward cannot run `model`; None when it can."""
    name, cfg = type(model).__name__, model.config
    if name not in FAMILIES:
        return f"{name} is not one of {sorted(FAMILIES)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act={cfg.hidden_act} (only silu)"
    types = getattr(cfg, "layer_types", None) or []
    if getattr(cfg, "use_sliding_window", False) or any(t != "full_attention" for t in types):
        return "it has sliding-window layers"
    theta = rope_theta(cfg)
    rotary = model.model.rotary_emb
    if theta is None or getattr(rotary, "attention_scaling", 1.0) != 1.0:
        return "its RoPE is not the default type"
    layers = model.model.layers
    d = layers[0].self_attn.head_dim
    expected = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    if rotary.inv_freq.shape != expected.shape or not torch.allclose(
        rotary.inv_freq.float().cpu(), expected, rtol=1e-2
    ):
        return "its rotary frequencies do not follow rope_theta"
    linears = [model.lm_head] + [
        m for b in layers for m in (*_attn_linears(b.self_attn), b.mlp.gate_proj, b.mlp.up_proj, b.mlp.down_proj)
    ]
    if type(model.model.embed_tokens) is not torch.nn.Embedding:
        return "its embeddings are not a plain nn.Embedding"
    if any(type(m) is not torch.nn.Linear for m in linears) or model.lm_head.bias is not None:
        return "its projections are not plain nn.Linear (adapters or quantisation)"
    if len({(p.device, p.dtype) for p in model.parameters()}) > 1:
        return "its weights are spread over several devices or dtypes"
    return None


def _attn_linears(attn) -> tuple:
    return attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj


# The pure functions below are what torch.compile fuses; each runs eagerly as written too.


def _room_for_graphs() -> None:
    # each compiled function keeps a graph per width (static, layer) or per token-count class, dtype and
    # model shape (a target, its heads and a drafter share them); past the limit it would silently run
    # eagerly
    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, 128)


@functools.cache
def fused_ops(dynamic: bool = True) -> Ops:
    """PLAIN compiled, dynamic over the token dim or static per width: shared by every FastModel (one
    set of compilations)."""
    _room_for_graphs()
    return Ops(*(torch.compile(f, dynamic=dynamic) for f in PLAIN))


class Layer(NamedTuple):
    """One decoder layer's weights (fused or shared with the HF model) and its key/value buffers."""

    qkv: torch.Tensor  # [(Hq + 2 Hkv) * D, d]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor  # [2I, d]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    ln1: torch.Tensor
    ln2: torch.Tensor
    eps: float
    k: torch.Tensor  # [1, Hkv, length + 1, D]
    v: torch.Tensor


def decoder_layer(ops: Ops, x, delta, layer: Layer, pos, cos, sin, mask):
    """One decoder layer on the residual stream carried as (x, delta), so each add fuses with a norm."""
    # x, delta: [S, d] -> (x + delta = HF's hidden state entering the layer, mid residual, mlp out), each [S, d]
    hs, h = ops.add_rms_norm(x, delta, layer.ln1, layer.eps)
    q = ops.rope_write(F.linear(h, layer.qkv, layer.qkv_bias), cos, sin, pos, layer.k, layer.v)
    a = attend(q, layer.k, layer.v, mask, x.shape[0])
    mid, h = ops.add_rms_norm(hs, F.linear(a, layer.o, layer.o_bias), layer.ln2, layer.eps)
    up = ops.silu_mul(F.linear(h, layer.gate_up, layer.gate_up_bias))
    return hs, mid, F.linear(up, layer.down, layer.down_bias)


def plain_layer(x, delta, layer: Layer, pos, cos, sin, mask):
    """decoder_layer over the plain functions: what "layer" compiles as one graph per width."""
    return decoder_layer(PLAIN, x, delta, layer, pos, cos, sin, mask)


@functools.cache
def compiled_layer(mode: str):
    """plain_layer compiled with static shapes but a dynamic span: one graph per width (and dtype, model shape)."""
    _room_for_graphs()
    return torch.compile(plain_layer, dynamic=False, mode=mode)


class FastModel:
    """The forward of a Llama-family causal LM over key/value buffers of `length` slots.

    Args:
        model: a loaded HF model for which `unsupported(model)` is None. Embeddings, norms, o/down
            projections and head are shared with it; fused q/k/v and gate/up weights are new tensors.
        length: key/value slots per layer; every position fed must be below it.
        compile: a key of COMPILE; off CUDA everything runs eagerly ("none").
        feature_layers: indices into HF's `hidden_states` (0 = embeddings, i = output of decoder
            layer i, the last one after the final norm as HF reports it); each forward writes their
            concatenation at its positions into `features` [length, len(feature_layers) * d].
    """

    def __init__(self, model, length: int, compile: str = "fused", feature_layers=None):
        if compile not in COMPILE:
            raise UserError(f"compile={compile!r}; choose one of {sorted(COMPILE)}")
        if reason := unsupported(model):
            raise UserError(f"the fast forward cannot run this model: {reason}")
        inner = model.model
        self.device, self.dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
        self.compile = compile if self.device.type == "cuda" else "none"
        self.feature_layers = feature_indices(feature_layers, len(inner.layers))
        with torch.inference_mode():
            self.layers = [_layer(block, length) for block in inner.layers]
            self.embed, self.head = inner.embed_tokens.weight, model.lm_head.weight
            self.norm, self.eps = inner.norm.weight, inner.norm.variance_epsilon
            self.cos, self.sin = _rope_tables(inner.rotary_emb.inv_freq, length, self.dtype)
            self.slots = torch.arange(length, device=self.device)
        width = len(self.feature_layers) * self.embed.shape[1]
        self.features = feature_buffer(length, width, self.embed) if self.feature_layers else None
        n_kv, head_dim = self.layers[0].k.shape[1], self.layers[0].k.shape[3]
        self.rep = (self.layers[0].qkv.shape[0] // head_dim - 2 * n_kv) // n_kv  # query heads per key/value head
        setting = COMPILE[self.compile]
        self.ops = fused_ops(setting.dynamic) if setting.fuse else PLAIN
        self.per_width = setting.fuse and not setting.dynamic  # compiled per width: the prefill runs PLAIN
        self._layer = compiled_layer(setting.layer_mode) if setting.layer_mode else None
        if setting.fuse:
            self._mark_static()

    def _mark_static(self) -> None:
        # dynamic=True compiles see these long-lived tensors with fixed sizes (only the token dim varies)
        owned = [self.cos, self.sin, self.slots, *(t for layer in self.layers for t in (layer.qkv, layer.gate_up))]
        owned += [t for layer in self.layers for t in (layer.k, layer.v, layer.qkv_bias) if t is not None]
        for t in owned + ([self.features] if self.features is not None else []):
            torch._dynamo.mark_static(t)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, pos: torch.Tensor, span: int, hidden: bool = False):
        """Logits [S, V] (model dtype) of tokens `ids` at positions `pos`, attending slots [0, span).

        With hidden=True (the prefill: any length, never per-width compiled) also the final-norm
        hidden states [S, d], HF's `hidden_states[-1]`; otherwise None.
        """
        # ids, pos: [S] -> logits [S, V], hidden [S, d] | None
        ops, slots = (PLAIN if hidden and self.per_width else self.ops), self.slots[:span]
        if self.per_width:
            torch._dynamo.maybe_mark_dynamic(slots, 0)  # one graph per width serves every span
        mask, cos, sin = ops.prologue(pos, slots, self.cos, self.sin, self.rep)
        layer_fn = functools.partial(decoder_layer, ops)
        if self._layer is not None and not hidden:
            torch._dynamo.maybe_mark_dynamic(mask, 3)  # one graph per width serves every span
            layer_fn = self._layer
        x = F.embedding(ids, self.embed)
        states, delta = {}, torch.zeros_like(x)
        for i, layer in enumerate(self.layers):
            hs, x, delta = layer_fn(x, delta, layer, pos, cos, sin, mask)
            if i in self.feature_layers:
                states[i] = hs
        _, out = ops.add_rms_norm(x, delta, self.norm, self.eps)
        states[len(self.layers)] = out
        if self.features is not None:
            self.features.index_copy_(0, pos, torch.cat([states[i] for i in self.feature_layers], dim=-1))
        return F.linear(out, self.head), (out if hidden else None)


def _layer(block, length: int) -> Layer:
    attn, mlp = block.self_attn, block.mlp
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    n_kv = k.weight.shape[0] // attn.head_dim
    # one slot more than any span, so that no span is the whole buffer: slicing the whole buffer would
    # be a second graph per width for "layer", which compiles `[:span]` with the span dynamic
    buffer = lambda: q.weight.new_zeros(1, n_kv, length + 1, attn.head_dim)  # noqa: E731
    return Layer(
        torch.cat([q.weight, k.weight, v.weight]),
        _cat_biases([q, k, v]),
        attn.o_proj.weight,
        attn.o_proj.bias,
        torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
        _cat_biases([mlp.gate_proj, mlp.up_proj]),
        mlp.down_proj.weight,
        mlp.down_proj.bias,
        block.input_layernorm.weight,
        block.post_attention_layernorm.weight,
        float(block.input_layernorm.variance_epsilon),
        buffer(),
        buffer(),
    )


def _cat_biases(linears: list) -> torch.Tensor | None:
    if all(m.bias is None for m in linears):
        return None
    return torch.cat([m.weight.new_zeros(m.weight.shape[0]) if m.bias is None else m.bias for m in linears])


def _rope_tables(inv_freq: torch.Tensor, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [length, D] of every slot, computed as HF's rotary embedding computes them per forward."""
    freqs = torch.arange(length, device=inv_freq.device).float()[:, None] * inv_freq.float()[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
