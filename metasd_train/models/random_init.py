"""Seeded randomly initialised causal LMs: `name: random` targets, smoke runs and tiny test models."""

from __future__ import annotations

import difflib
import inspect

import torch

from metasd_train.errors import UserError

# arch -> (config class, model class) in transformers
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}


def random_lm(config: dict, arch: str = "llama", seed: int = 0):
    """A causal LM of `arch` built from its config kwargs, initialised from `seed` (global RNG untouched).

    Raises:
        UserError: for an unknown arch, a key the arch's config does not have, or an invalid value.
    """
    cfg = make_config(config, arch)
    model_cls = getattr(_transformers(), ARCHS[arch][1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(cfg).eval()


def make_config(config: dict, arch: str = "llama"):
    """The transformers config of `arch` from kwargs; every key must be one the config knows."""
    if arch not in ARCHS:
        raise UserError(f"config arch={arch!r} is not valid; choose one of: {', '.join(ARCHS)}")
    config_cls = getattr(_transformers(), ARCHS[arch][0])
    try:
        cfg = config_cls(**dict(config))
    except _config_errors() as e:
        reason = str(e).strip().splitlines()[-1].strip()  # the last line names the field and the problem
        raise UserError(f"config is not a valid {config_cls.__name__}: {reason}") from None
    fields = set(inspect.signature(config_cls.__init__).parameters)
    # a key the class neither has nor consumed (legacy ones like rope_theta are) stays as a stray attribute
    unknown = [k for k in config if k not in fields and k in vars(cfg)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"config key {unknown[0]!r} is not a {config_cls.__name__} field (arch={arch}){hint}")
    return cfg


TINY = dict(max_position_embeddings=1024, bos_token_id=0, eos_token_id=1, pad_token_id=1, initializer_range=0.3)


def tiny_llama(vocab_size: int = 32, layers: int = 2, hidden: int = 32, seed: int = 0, **extra):
    """A tiny random Llama for unit tests (never for real runs).

    Untied embeddings and a wide init (0.3) give varied, non-degenerate continuations; the
    default init (0.02, tied) just repeats the last token, which would let weak tests pass.
    """
    shape = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers)
    config = {**TINY, **shape, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}
    return random_lm({**config, **extra}, "llama", seed)


def tiny_qwen2(vocab_size: int = 32, layers: int = 2, hidden: int = 48, seed: int = 0, **extra):
    """A tiny random Qwen2 for unit tests: q/k/v biases, 6 query heads sharing 1 KV head, untied head
    (`extra` overrides any of it, e.g. num_key_value_heads=2, tie_word_embeddings=True).

    The biases are drawn like the weights (HF zeroes them), so a path that drops or misplaces
    them changes the logits.
    """
    shape = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers)
    config = {**TINY, **shape, "num_attention_heads": 6, "num_key_value_heads": 1, "tie_word_embeddings": False}
    config.update(extra)
    model = random_lm(config, "qwen2", seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * config["initializer_range"])
    return model.eval()


def _config_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub import errors  # strict-dataclass validation errors derive from Exception only

    return (TypeError, ValueError, getattr(errors, "StrictDataclassError", ValueError))


def _transformers():
    import transformers  # deferred: importing this module stays cheap

    return transformers
