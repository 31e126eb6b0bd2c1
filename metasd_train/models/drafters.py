"""Drafter builders by kind (`drafter.kind`): a truncated copy of the target, a fresh small config, a
pretrained small LM, or a feature-level head. One registry, read by building and config validation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from metasd_train.errors import UserError


@dataclass(frozen=True)
class DrafterKind:
    build: Callable  # (target, drafter_cfg, seed, device, tokenizer, examples) -> trainable module in fp32
    arm: str  # the engine arm family that decodes with it (decoding.assemble.ARM_BUILDERS)


DRAFTER_KINDS: dict[str, DrafterKind] = {}


def drafter_kind(name: str, arm: str = "model"):
    def register(build):
        DRAFTER_KINDS[name] = DrafterKind(build, arm)
        return build

    return register


def build_drafter(target, d, seed: int, device, tokenizer, examples):
    """The student for `drafter.kind`, in fp32 master weights (bf16-mixed autocasts its compute);
    `examples` (the self-distilled data) is what data-dependent kinds (a head's vocabulary) read."""
    return DRAFTER_KINDS[d.kind].build(target, d, seed, device, tokenizer, examples)


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


def answer_counts(examples, vocab_size: int):
    """[V] token counts over the target's own training answers (not the written examples): what a
    head's draft vocabulary is built from and cut by."""
    from metasd_train.models.draft_vocab import token_counts

    own = zip(examples["response_ids"], examples["split"], examples["kind"])
    return token_counts([r for r, split, kind in own if split == "train" and kind != "written"], vocab_size)


@drafter_kind("head", arm="head")
def _head(target, d, seed, device, tokenizer, examples):
    from metasd_train.models.head import build_head
    from metasd_train.models.tokenizers import eos_ids

    counts = answer_counts(examples, target.config.vocab_size)
    layers = list(d.head.feature_layers) if d.head.feature_layers else None
    k = min(int(d.head.draft_vocab), target.config.vocab_size)
    return build_head(target, k, counts, eos_ids(target, tokenizer), layers, seed).to(device).float()


@drafter_kind("truncated")
def _truncated(target, d, seed, device, tokenizer, examples):
    return truncated(target, d.layers, d.freeze_embeddings).float()


@drafter_kind("fresh")
def _fresh(target, d, seed, device, tokenizer, examples):
    from omegaconf import OmegaConf

    return fresh(target, OmegaConf.to_container(d.config), seed).float()


@drafter_kind("pretrained")
def _pretrained(target, d, seed, device, tokenizer, examples):
    from metasd_train.models.loading import load_model
    from metasd_train.models.tokenizers import check_tokenizers, check_vocab

    if not d.path:
        raise UserError("drafter.kind=pretrained needs drafter.path=<HF folder or .gguf>")
    loaded = load_model({"name": d.path, "dtype": "fp32"}, device)
    check_tokenizers(tokenizer, loaded.tokenizer, f"drafter {d.path}")
    check_vocab(target.config.vocab_size, loaded.model.config.vocab_size, f"drafter {d.path}", len(tokenizer))
    return loaded.model


def _layer_at_or_after(key: str, layers: int) -> bool:
    parts = key.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        return i + 1 < len(parts) and parts[i + 1].isdigit() and int(parts[i + 1]) >= layers
    return False


def fresh(target, config: dict, seed: int = 0):
    """A new small Llama with the target's vocabulary and special tokens."""
    from metasd_train.models.random_init import random_lm

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
    return random_lm(kwargs, "llama", seed).to(device=target.device, dtype=target.dtype).eval()
