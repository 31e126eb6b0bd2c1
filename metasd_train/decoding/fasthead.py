"""The decode steps of an EAGLE-3 draft head, as HeadRuntime takes them: the reference and a fast form.

`HeadSteps` runs `DraftHead.step` (models/head.py), the reference and training-side maths.
`FastHead` computes the same maths with few kernels, shaped like fastmodel's target forward: RoPE
cos/sin tables made once and gathered by position, one matmul for q/k/v and one for gate/up (fused
copies built here: the head, its training and its saved format are untouched), and the elementwise
chains between matmuls (norm + cat, residual + norm, SiLU * up) as fused_ops' pure functions.
Under any compiling `compile` setting (fastmodel.COMPILE: all but "none") those functions are
compiled for every width (over the token count, or once per width under "static"; the ones the
target shares are the target's own compilations), with attention written out as matmuls and softmax
and the greedy pick (argmax, then the draft-to-target id map); and the link a greedy chain repeats
(embedding, step, pick) is compiled whole, at width 1 only, with the setting's inductor mode
("default" for "fused"). Everything stays CUDA-graph capturable.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metasd_train.decoding.fastmodel import COMPILE, _room_for_graphs, fused_ops
from metasd_train.decoding.fused_ops import PLAIN, attend, attend_matmul, rms_norm_cat
from metasd_train.errors import UserError
from metasd_train.models.head import DraftHead, HeadCache
from metasd_train.models.head_layer import rope


def pick(logits: torch.Tensor, draft_ids: torch.Tensor) -> torch.Tensor:
    """Greedy draft: the target id of the best draft-vocabulary logit."""
    # logits: [S, K]; draft_ids: [K] -> [S]
    return draft_ids[logits.argmax(-1)]


class HeadOps(NamedTuple):
    prologue: object
    rms_norm_cat: object
    add_rms_norm: object
    rope_write: object
    silu_mul: object
    attend: object
    pick: object


EAGER = HeadOps(PLAIN.prologue, rms_norm_cat, PLAIN.add_rms_norm, PLAIN.rope_write, PLAIN.silu_mul, attend, pick)
INDUCTOR = EAGER._replace(attend=attend_matmul)  # what compiles well: SDPA's kernels are slow for a few rows


@functools.cache
def head_fused_ops(dynamic: bool = True) -> HeadOps:
    """INDUCTOR compiled, dynamic over the token dim (and span) or static per width (the span marked
    dynamic by the caller); the target's compiled ones where shared."""
    ops = fused_ops(dynamic)
    norm_cat, attention, greedy = (torch.compile(f, dynamic=dynamic) for f in (rms_norm_cat, attend_matmul, pick))
    return HeadOps(ops.prologue, norm_cat, ops.add_rms_norm, ops.rope_write, ops.silu_mul, attention, greedy)


class HeadWeights(NamedTuple):
    """A head's weights for the fast step: q/k/v and gate/up fused, the rest shared with the head."""

    ln_embed: torch.Tensor
    ln_hidden: torch.Tensor
    qkv: torch.Tensor  # [(Hq + 2 Hkv) * D, 2d]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    ln_post: torch.Tensor
    gate_up: torch.Tensor  # [2I, d]
    down: torch.Tensor
    norm: torch.Tensor
    lm_head: torch.Tensor  # [K, d]
    eps: float


def head_weights(head: DraftHead) -> HeadWeights:
    layer, attn = head.midlayer, head.midlayer.self_attn
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    with torch.no_grad():
        qkv = torch.cat([q.weight, k.weight, v.weight])
        bias = torch.cat([q.bias, k.bias, v.bias]) if q.bias is not None else None
        gate_up = torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight])
    return HeadWeights(
        layer.input_layernorm.weight.detach(),
        layer.hidden_norm.weight.detach(),
        qkv,
        bias,
        attn.o_proj.weight.detach(),
        layer.post_attention_layernorm.weight.detach(),
        gate_up,
        layer.mlp.down_proj.weight.detach(),
        head.norm.weight.detach(),
        head.lm_head.weight.detach(),
        float(head.config.rms_norm_eps),
    )


def head_step(ops: HeadOps, w: HeadWeights, hidden, embeds, pos, cos, sin, mask, k_cache, v_cache):
    """DraftHead.step's maths: attention over [norm(embeds), norm(hidden)], residual, SwiGLU, norm, lm_head."""
    # hidden, embeds: [S, d]; pos: [S]; cos, sin: [S, 1, D]; mask: [1, 1, rep*S, span]
    # -> out_hidden [S, d], logits [S, K]
    x = ops.rms_norm_cat(embeds, hidden, w.ln_embed, w.ln_hidden, w.eps)
    q = ops.rope_write(F.linear(x, w.qkv, w.qkv_bias), cos, sin, pos, k_cache, v_cache)
    a = ops.attend(q, k_cache, v_cache, mask, hidden.shape[0])
    h, x = ops.add_rms_norm(hidden, F.linear(a, w.o), w.ln_post, w.eps)
    out, x = ops.add_rms_norm(h, F.linear(ops.silu_mul(F.linear(x, w.gate_up)), w.down), w.norm, w.eps)
    return out, F.linear(x, w.lm_head)


def greedy_step(ops: HeadOps, w: HeadWeights, embed, draft_ids, hidden, token, pos, slots, cos_t, sin_t, rep, k, v):
    """One link of a greedy chain: embed the last draft, step, pick the next draft."""
    # hidden: [1, d]; token, pos: [1]; slots: [span]; tables: [length, D] -> out_hidden [1, d], token [1]
    mask, cos, sin = ops.prologue(pos, slots, cos_t, sin_t, rep)
    out, logits = head_step(ops, w, hidden, F.embedding(token, embed), pos, cos, sin, mask, k, v)
    return out, ops.pick(logits, draft_ids)


def inductor_greedy_step(*args):
    """greedy_step over the functions inductor compiles well: what a chain's link compiles to, one graph."""
    return greedy_step(INDUCTOR, *args)


@functools.cache
def compiled_greedy_step(mode: str):
    """inductor_greedy_step compiled with static shapes but a dynamic span (one graph per head shape)."""
    _room_for_graphs()
    return torch.compile(inductor_greedy_step, dynamic=False, mode=mode)


def unsupported(head, embed) -> str | None:
    """Why FastHead cannot run `head` over the embedding module `embed`; None when it can."""
    if not isinstance(head, DraftHead):
        return f"{type(head).__name__} is not a DraftHead (merge adapters first)"
    if type(embed) is not torch.nn.Embedding:
        return f"the target's embedding is a {type(embed).__name__}, not a plain nn.Embedding"
    if head.config.hidden_act != "silu":
        return f"hidden_act={head.config.hidden_act} (only silu)"
    if any(isinstance(m, torch.nn.Linear) and type(m) is not torch.nn.Linear for m in head.modules()):
        return "its projections are not plain nn.Linear (adapters or quantisation)"
    mlp = head.midlayer.mlp
    unbiased = (head.midlayer.self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj, head.lm_head)
    if any(m.bias is not None for m in unbiased):
        return "o_proj, the MLP or lm_head has a bias"
    if len({(p.device, p.dtype) for p in head.parameters()}) > 1:
        return "its weights are spread over several devices or dtypes"
    return None


class HeadSteps:
    """The steps HeadRuntime takes (`new_cache`, `step`, `pick`, `greedy_step`), through DraftHead.step.

    Args:
        head: a DraftHead (or anything with its `step`, `new_cache` and `to_target`).
        embed: the target's input embedding module (shared, never copied).
    """

    def __init__(self, head, embed):
        self.head, self.embed = head, embed
        self.draft_ids = head.to_target(torch.arange(head.config.draft_vocab_size, device=head.d2t.device))  # [K]

    def new_cache(self, max_len: int) -> HeadCache:
        return self.head.new_cache(max_len)

    def step(self, hidden, ids, positions, cache: HeadCache, span: int):
        """DraftHead.step on the embeddings of `ids`: out_hidden [S, d] and logits [S, K]."""
        return self.head.step(hidden, self.embed(ids), positions, cache, span)

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        return pick(logits, self.draft_ids)

    def greedy_step(self, hidden, token, positions, cache: HeadCache, span: int):
        """(out_hidden [1, d], next draft [1]) from the last draft `token` [1] at `positions` [1]."""
        hidden, logits = self.step(hidden, token, positions, cache, span)
        return hidden, self.pick(logits)


class FastHead(HeadSteps):
    """HeadSteps over fused weights, RoPE tables and fused (compiled) ops: the same maths, few kernels.

    Args:
        head: a DraftHead for which `unsupported(head, embed)` is None; it shares its norms, o/down and
            lm_head weights.
        embed: the target's input embedding (an nn.Embedding).
        length: positions the caches of `new_cache` may hold (the RoPE tables' length).
        compile: a key of fastmodel.COMPILE; off CUDA everything runs eagerly ("none").
    """

    def __init__(self, head: DraftHead, embed, length: int, compile: str = "fused"):
        if compile not in COMPILE:
            raise UserError(f"compile={compile!r}; choose one of {sorted(COMPILE)}")
        if reason := unsupported(head, embed):
            raise UserError(f"the fast head step cannot run this head: {reason}")
        super().__init__(head, embed)
        c, w = head.config, head.fc.weight
        self.length, self.device = length, w.device
        self.compile = compile if self.device.type == "cuda" else "none"
        self.weights = head_weights(head)
        self.rep = c.num_attention_heads // c.num_key_value_heads  # query heads per key/value head
        with torch.no_grad():
            self.cos, self.sin = rope(torch.arange(length, device=self.device), c.head_dim, c.rope_theta, w.dtype)
            self.slots = torch.arange(length, device=self.device)
        setting = COMPILE[self.compile]
        self.ops = head_fused_ops(setting.dynamic) if setting.fuse else EAGER
        self.per_width = setting.fuse and not setting.dynamic  # compiled per width, the span marked dynamic
        self._greedy = compiled_greedy_step(setting.layer_mode or "default") if setting.fuse else None
        self.static = setting.fuse
        if self.static:  # dynamic=True compiles see these with fixed sizes (only the token dim varies)
            w = self.weights
            for t in (self.cos, self.sin, self.slots, self.draft_ids, w.qkv, w.gate_up, w.qkv_bias):
                if t is not None:
                    torch._dynamo.mark_static(t)

    def new_cache(self, max_len: int) -> HeadCache:
        """The head's zeroed KV buffers; `max_len` at most `length`."""
        if max_len > self.length:
            raise ValueError(f"a cache of {max_len} positions outgrows this FastHead's {self.length}")
        cache = self.head.new_cache(max_len)
        if self.static:
            torch._dynamo.mark_static(cache.k)
            torch._dynamo.mark_static(cache.v)
        return cache

    def step(self, hidden, ids, positions, cache: HeadCache, span: int):
        # hidden: [S, d]; ids, positions: [S] -> out_hidden [S, d], logits [S, K]
        slots = self.slots[:span]
        if self.per_width:
            torch._dynamo.maybe_mark_dynamic(slots, 0)  # one graph per width serves every span
        mask, cos, sin = self.ops.prologue(positions, slots, self.cos, self.sin, self.rep)
        if self.per_width:
            torch._dynamo.maybe_mark_dynamic(mask, 3)  # and the compiled attention's, over the span
        embeds = F.embedding(ids, self.embed.weight)
        return head_step(self.ops, self.weights, hidden, embeds, positions, cos, sin, mask, cache.k, cache.v)

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        return self.ops.pick(logits, self.draft_ids)

    def greedy_step(self, hidden, token, positions, cache: HeadCache, span: int):
        if self._greedy is None:
            return super().greedy_step(hidden, token, positions, cache, span)
        slots = self.slots[:span]
        torch._dynamo.maybe_mark_dynamic(slots, 0)  # one graph serves every span
        tables = (slots, self.cos, self.sin, self.rep, cache.k, cache.v)
        return self._greedy(self.weights, self.embed.weight, self.draft_ids, hidden, token, positions, *tables)
