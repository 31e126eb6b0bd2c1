"""The pure functions between the fast forward's matmuls: what torch.compile fuses (each also runs eagerly)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def prologue(pos: torch.Tensor, slots: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor, rep: int):
    """The additive mask for `rep` stacked query groups, and RoPE's cos/sin at `pos`."""
    # pos: [S]; slots: [span]; tables: [length, D] -> mask [1, 1, rep*S, span]; cos, sin [S, 1, D]
    allowed = slots[None, :] <= pos[:, None]
    dtype = cos_table.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=pos.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask.repeat(rep, 1)[None, None], cos_table[pos][:, None], sin_table[pos][:, None]


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """The residual sum and its RMSNorm, in HF's order of casts."""
    # x, delta: [S, d]; weight: [d] -> (x + delta, norm(x + delta)), both [S, d]
    x = x + delta
    return x, rms_norm(x, weight, eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [S, H, D]; cos, sin: [S, 1, D] -> [S, H, D]
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def rope_write(qkv, cos, sin, pos, k_cache, v_cache) -> torch.Tensor:
    """RoPE on q and k, k and v written at `pos`; returns q with each key/value head's queries stacked."""
    # qkv: [S, (Hq + 2 Hkv) * D]; cos, sin: [S, 1, D]; pos: [S]; caches: [1, Hkv, length, D]
    # -> q [1, Hkv, rep * S, D] (query head h = kv * rep + r, as HF's repeat_kv pairs them)
    s, n_kv, d = qkv.shape[0], k_cache.shape[1], k_cache.shape[3]
    qkv = qkv.view(s, -1, d)
    q, k, v = qkv[:, : -2 * n_kv], qkv[:, -2 * n_kv : -n_kv], qkv[:, -n_kv:]
    k_cache.index_copy_(2, pos, rotate(k, cos, sin).transpose(0, 1)[None])
    v_cache.index_copy_(2, pos, v.transpose(0, 1)[None])
    return rotate(q, cos, sin).view(s, n_kv, -1, d).permute(1, 2, 0, 3).reshape(1, n_kv, -1, d)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    # gate_up: [S, 2I] -> [S, I]
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def attend(q, k_cache, v_cache, mask, s: int) -> torch.Tensor:
    """SDPA over the span's slots; returns the heads side by side, in HF's head order."""
    # q: [1, Hkv, rep*S, D]; caches: [1, Hkv, length, D]; mask: [1, 1, rep*S, span] -> [S, Hq * D]
    span, n_kv, d = mask.shape[-1], q.shape[1], q.shape[-1]
    o = F.scaled_dot_product_attention(q, k_cache[:, :, :span], v_cache[:, :, :span], attn_mask=mask, scale=d**-0.5)
    return o.view(n_kv, -1, s, d).permute(2, 0, 1, 3).reshape(s, -1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in HF's order of casts (normalised in fp32, cast back, then scaled)."""
    # x: [S, d]; weight: [d] -> [S, d]
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_norm_cat(a: torch.Tensor, b: torch.Tensor, weight_a: torch.Tensor, weight_b: torch.Tensor, eps: float):
    """[norm(a), norm(b)] side by side: a draft head's attention input (embeddings, then hidden states)."""
    # a, b: [S, d]; weights: [d] -> [S, 2d]
    return torch.cat([rms_norm(a, weight_a, eps), rms_norm(b, weight_b, eps)], dim=-1)


def attend_matmul(q, k_cache, v_cache, mask, s: int) -> torch.Tensor:
    """attend's maths as HF's eager attention writes it (q k^T, softmax in fp32, times v): compiled for a
    few query rows, inductor's kernels beat SDPA's, the more so the longer the span."""
    # q: [1, Hkv, rep*S, D]; caches: [1, Hkv, length, D]; mask: [1, 1, rep*S, span] -> [S, Hq * D]
    span, n_kv, d = mask.shape[-1], q.shape[1], q.shape[-1]
    scores = torch.matmul(q, k_cache[:, :, :span].transpose(2, 3)) * d**-0.5 + mask
    o = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v_cache[:, :, :span])
    return o.view(n_kv, -1, s, d).permute(2, 0, 1, 3).reshape(s, -1)


class Ops(NamedTuple):
    prologue: object
    add_rms_norm: object
    rope_write: object
    silu_mul: object


PLAIN = Ops(prologue, add_rms_norm, rope_write, silu_mul)
