"""Tokenizer compatibility: a drafter is only usable if it maps the same strings to the same ids."""

from __future__ import annotations

from metasd_train.errors import UserError

PROBES = [
    "Hello, world!",
    "def add(a, b):\n    return a + b",
    "Solve for x: 3x + 5 = 20.",
    "Übersetze: Guten Morgen, wie geht's?",
    "  leading spaces, tabs\tand\nnewlines  ",
    "数学 123 456.789 e^{i\\pi} + 1 = 0",
]


def eos_ids(model, tokenizer=None) -> list[int]:
    """Every id that ends an answer: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    if tokenizer is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted({i for i in ids if i is not None})


def check_tokenizers(target_tok, drafter_tok, drafter_name: str = "drafter") -> None:
    """Raise UserError unless both tokenizers give the same ids for the probe strings and specials."""
    if target_tok is None or drafter_tok is None:
        return
    for text in PROBES:
        a = target_tok(text, add_special_tokens=False)["input_ids"]
        b = drafter_tok(text, add_special_tokens=False)["input_ids"]
        if a != b:
            raise UserError(
                f"{drafter_name}'s tokenizer does not match the target's (they split {text[:24]!r} differently); "
                "use a drafter trained with the target's tokenizer"
            )
    for attr in ("eos_token_id", "bos_token_id"):
        if getattr(target_tok, attr, None) != getattr(drafter_tok, attr, None):
            raise UserError(
                f"{drafter_name}'s {attr} differs from the target's; use a drafter with the target's tokenizer"
            )


def check_vocab(
    target_vocab: int, drafter_vocab: int, drafter_name: str = "drafter", tokenizer_size: int | None = None
) -> None:
    """Differing vocab sizes are fine (logits are padded or cut) only if both cover the tokenizer."""
    need = tokenizer_size or min(target_vocab, drafter_vocab)
    if drafter_vocab < need:
        raise UserError(
            f"{drafter_name} has {drafter_vocab} output tokens but the target's tokenizer has {need}; "
            "the drafter must share the target's vocabulary"
        )
