"""The EAGLE-3 midlayer and its parts: RMSNorm, RoPE, attention over [norm(embed), norm(hidden)], SwiGLU."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from metasd_train.models.head import HeadConfig


ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., d] -> [..., d]; normalised in fp32, then cast back (as HF's LlamaRMSNorm)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin [S, hd] for default RoPE (HF's inv_freq in fp32, halves duplicated)."""
    # positions: [S] long -> cos, sin: [S, hd]
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, S, hd]; cos, sin: [S, hd] -> [B, H, S, hd] (rotate_half convention)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention with grouped KV heads and a boolean mask (True = attend)."""
    # q: [B, H, S, hd]; k, v: [B, Hkv, N, hd]; mask: [S, N] or [B, 1, S, N] -> [B, H, S, hd]
    b, hkv, n, hd = k.shape
    groups = q.shape[1] // hkv
    if groups > 1:  # HF's repeat_kv: query head h reads kv head h // groups (expand + reshape: no host sync)
        k = k[:, :, None].expand(b, hkv, groups, n, hd).reshape(b, hkv * groups, n, hd)
        v = v[:, :, None].expand(b, hkv, groups, n, hd).reshape(b, hkv * groups, n, hd)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        d, hd = c.hidden_size, c.head_dim
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_key_value_heads, hd
        self.theta = c.rope_theta
        self.q_proj = nn.Linear(2 * d, self.n_heads * hd, bias=c.attention_bias)
        self.k_proj = nn.Linear(2 * d, self.n_kv * hd, bias=c.attention_bias)
        self.v_proj = nn.Linear(2 * d, self.n_kv * hd, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        # x: [B, S, 2d]; positions: [S] -> q [B, H, S, hd], k, v [B, Hkv, S, hd] (q, k rotated)
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = rope(positions, self.head_dim, self.theta, x.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin), v


class MLP(nn.Module):
    def __init__(self, c: HeadConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class MidLayer(nn.Module):
    """The single decoder layer: attention over [norm(embed), norm(hidden)], residual = hidden."""

    def __init__(self, c: HeadConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.hidden_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def qkv(self, hidden: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor):
        # hidden, embeds: [B, S, d]; positions: [S] -> q [B, H, S, hd], k, v [B, Hkv, S, hd]
        x = torch.cat((self.input_layernorm(embeds), self.hidden_norm(hidden)), dim=-1)
        return self.self_attn.project(x, positions)

    def finish(self, hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        # hidden: [B, S, d]; attn: [B, H, S, hd] -> out_hidden [B, S, d]
        h = hidden + self.self_attn.o_proj(attn.transpose(1, 2).flatten(2))
        return h + self.mlp(self.post_attention_layernorm(h))
