"""Drafter builders: a truncated copy of the target, a fresh small config, or a pretrained small LM."""

from __future__ import annotations

import copy

import torch

from metasd_train.errors import UserError


def truncated(target, layers: int, freeze_embeddings: bool = True):
    """Embeddings + the target's first `layers` blocks + final norm + head, weights copied."""
    from transformers import AutoModelForCausalLM

    total = target.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise UserError(f"drafter.layers={layers} but the target has {total} layers; choose 1..{total}")
    cfg = copy.deepcopy(target.config)
    cfg.num_hidden_layers = layers
    if hasattr(cfg, "layer_types") and cfg.layer_types:
        cfg.layer_types = cfg.layer_types[:layers]
    cfg.quantization_config = None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    drafter = AutoModelForCausalLM.from_config(cfg, dtype=target.dtype)
    keep = {k: v for k, v in target.state_dict().items() if not _layer_at_or_after(k, layers)}
    missing, unexpected = drafter.load_state_dict(keep, strict=False)
    if [m for m in missing if "rotary" not in m] or unexpected:
        raise UserError(
            f"cannot truncate a {type(target).__name__}: weights did not line up ({missing[:2]}, {unexpected[:2]})"
        )
    if cfg.tie_word_embeddings:
        drafter.tie_weights()
    if freeze_embeddings:
        drafter.get_input_embeddings().weight.requires_grad_(False)
        drafter.get_output_embeddings().weight.requires_grad_(False)
    return drafter.to(target.device).eval()


def _layer_at_or_after(key: str, layers: int) -> bool:
    parts = key.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        return i + 1 < len(parts) and parts[i + 1].isdigit() and int(parts[i + 1]) >= layers
    return False


def fresh(target, config: dict, seed: int = 0):
    """A new small Llama with the target's vocabulary and special tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = target.config
    kwargs = dict(
        vocab_size=base.vocab_size,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        pad_token_id=getattr(base, "pad_token_id", None),
        max_position_embeddings=base.max_position_embeddings,
        tie_word_embeddings=True,
    )
    kwargs.update(dict(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**kwargs)).to(device=target.device, dtype=target.dtype).eval()


def tiny_llama(vocab_size: int = 32, layers: int = 2, hidden: int = 32, seed: int = 0, **extra):
    """A tiny random Llama for unit tests (never for real runs).

    Untied embeddings and a wide init (0.3) give varied, non-degenerate continuations; the
    default init (0.02, tied) just repeats the last token, which would let weak tests pass.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        tie_word_embeddings=False,
        initializer_range=0.3,
        **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg).eval()
