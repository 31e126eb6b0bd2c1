"""Checks of a composed config that the type system cannot express: choices read from the component
registries, numeric ranges, domains; each error names the key and the valid choices or range."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from metasd_train.config import STAGES, companion
from metasd_train.errors import UserError


def validate(cfg: DictConfig) -> None:
    """Checks the type system cannot express; each names the key and the valid choices or range."""
    from metasd_train.bandit.chooser import FEEDBACK
    from metasd_train.bandit.policies import POLICIES
    from metasd_train.bandit.rewards import REWARDS
    from metasd_train.decoding.arms import NGRAM_LENGTHS
    from metasd_train.distill.losses import LOSSES
    from metasd_train.models.drafters import DRAFTER_KINDS
    from metasd_train.models.loading import DTYPES

    choices = {
        "drafter.kind": tuple(DRAFTER_KINDS),
        "drafter.specialists": ("lora", "full", "none"),
        "drafter.ngram_length": NGRAM_LENGTHS,
        "distill.loss": tuple(LOSSES),
        "bandit.policy": tuple(POLICIES),
        "bandit.reward": tuple(REWARDS),
        "bandit.feedback": tuple(FEEDBACK),
        "export.dtype": ("bf16", "fp16", "fp32"),
        "decode.dtype": ("auto", *DTYPES),
        "target.dtype": ("auto", *DTYPES),
    }
    for name in cfg.drafter.companions:
        if (kind := companion(cfg.drafter, name).kind) not in DRAFTER_KINDS:
            raise UserError(
                f"drafter.companions.{name}.kind={kind!r} is not valid; choose one of: {', '.join(DRAFTER_KINDS)}"
            )
    for key, valid in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in valid:
            raise UserError(f"{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
    for stage in cfg.stages:
        if stage not in STAGES:
            raise UserError(f"stages: unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    for name, g in cfg.drafter.gammas.items():
        if not 1 <= int(g) <= MAX_GAMMA:
            raise UserError(f"drafter.gammas.{name}={g} must be >= 1 and <= {MAX_GAMMA}")
    if cfg.decode.temperature < 0 or not 0 < cfg.decode.top_p <= 1 or cfg.decode.top_k < 0:
        raise UserError("decode: need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
    if len(cfg.data.split) != 3 or abs(sum(cfg.data.split) - 1) > 1e-6 or min(cfg.data.split) < 0:
        raise UserError(f"data.split must be three non-negative fractions summing to 1, got {list(cfg.data.split)}")
    for key, ok, want in RANGES:
        value = OmegaConf.select(cfg, key)
        if not _holds(ok, value):
            raise UserError(f"{key}={value} is out of range: it must be {want}")
    _validate_domains(cfg)
    if cfg.drafter.kind == "pretrained" and not cfg.drafter.path:
        raise UserError("drafter.kind=pretrained needs drafter.path=<a local HF model folder or .gguf file>")


MAX_GAMMA = 32  # drafts per round: the fast path captures one graph per width up to γ+1
MIN_TEMPERATURE = 1e-3  # below this, logits / T overflow to inf and the probabilities to NaN


def _finite(x) -> bool:

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _temperature(t) -> bool:
    return _finite(t) and (t == 0 or t >= MIN_TEMPERATURE)


def _holds(ok, value) -> bool:
    try:
        return bool(ok(value))
    except TypeError:
        return False


# (key, test, what it must be): the ranges validate() enforces, one error line each.
RANGES = [
    ("drafter.gamma", lambda v: 1 <= v <= MAX_GAMMA, f"an integer from 1 to {MAX_GAMMA}"),
    ("drafter.ngram_gamma", lambda v: 1 <= v <= MAX_GAMMA, f"an integer from 1 to {MAX_GAMMA}"),
    ("drafter.layers", lambda v: v >= 1, ">= 1"),
    ("data.batch_size", lambda v: v >= 1, ">= 1"),
    ("data.max_prompt_tokens", lambda v: v >= 1, ">= 1"),
    ("data.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("data.temperature", lambda v: _finite(v) and v >= MIN_TEMPERATURE, f">= {MIN_TEMPERATURE} (the sampled answers')"),
    ("distill.lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("distill.lora_lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("distill.weight_decay", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("distill.ce_weight", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("distill.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("distill.batch_size", lambda v: v >= 1, ">= 1"),
    ("distill.length_groups", lambda v: v >= 0, ">= 0 (0 = plain shuffle)"),
    ("distill.accumulate", lambda v: v >= 1, ">= 1"),
    ("distill.max_steps", lambda v: v >= 0, ">= 0"),
    ("distill.specialist_steps", lambda v: v >= 0, ">= 0"),
    ("distill.val_every", lambda v: v >= 1, ">= 1"),
    ("distill.checkpoint_every", lambda v: v >= 0, ">= 0 (0: checkpoint only when a model's training ends)"),
    ("bandit.ridge", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("bandit.beta", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("bandit.exp3_gamma", lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]"),
    ("bandit.exp3_share", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("bandit.budget", lambda v: v >= 1, ">= 1"),
    ("bandit.context_dim", lambda v: v >= 1, ">= 1"),
    ("bandit.prior_strength", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("decode.temperature", _temperature, f"0 (greedy) or >= {MIN_TEMPERATURE}"),
    ("decode.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("decode.early_stop", lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    ("decode.heldout_per_domain", lambda v: v >= 1, ">= 1 (log_acceptance decodes held-out prompts)"),
    ("decode.max_len", lambda v: v >= 2, ">= 2"),
    ("drafter.head.draft_vocab", lambda v: v >= 1, ">= 1"),
    (
        "drafter.head.draft_vocab_sizes",
        lambda v: all(isinstance(k, int) and k >= 8 for k in v),
        "a list of draft-vocabulary sizes >= 8 (room for the end-of-sequence ids it always keeps)",
    ),
    ("drafter.head.draft_vocab_tolerance", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
]


def _validate_domains(cfg: DictConfig) -> None:
    """Every domain takes enough prompts for a train, a validation and a held-out one (the split
    arithmetic of data.prompts.domain_prompts); written examples belong to a domain."""
    if not cfg.data.domains:
        raise UserError("data.domains is empty; name at least one domain (see configs/data/)")
    for name, src in (cfg.data.get("written") or {}).items():
        if name not in cfg.data.domains:
            raise UserError(f"data.written.{name} is not a domain; name one of: {', '.join(cfg.data.domains)}")
        shaped = isinstance(src, DictConfig) and isinstance(src.get("source"), str) and isinstance(src.get("n"), int)
        if not shaped or src.n < 1:
            raise UserError(f"data.written.{name} must be {{source: NAME, n: >= 1, options: {{...}}}}, got {src}")
    train, val, _ = cfg.data.split
    for name, src in cfg.data.domains.items():
        n = src.n
        if not isinstance(n, int) or n < 3:
            raise UserError(f"data.domains.{name}.n={n} is out of range: it must be >= 3 (train, val, held-out)")
        n_train, n_val = round(train * n), max(1, round(val * n))
        if n_train < 1 or n - n_train - n_val < 1:
            raise UserError(
                f"data.domains.{name}.n={n} with data.split={list(cfg.data.split)} leaves {n_train} training and "
                f"{max(n - n_train - n_val, 0)} held-out prompts; raise n or change the split so each gets one"
            )
