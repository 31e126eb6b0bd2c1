"""Domain prompts: take, filter, split by seed; encode with the target's chat template."""

from __future__ import annotations

import itertools
import random

from metasd_train.data.sources import load_source
from metasd_train.errors import UserError

SPLITS = ("train", "val", "heldout")


def chat_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of a conversation (one user turn, or a list of messages) plus the assistant prefix,
    through the target's own chat template."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def domain_prompts(domains: dict, tokenizer, max_prompt_tokens: int, split: list[float], seed: int) -> list[dict]:
    """Rows {domain, id, prompt, prompt_ids, split}; the same config always gives the same rows."""
    rows = []
    for domain, src in domains.items():
        pool = list(itertools.islice(load_source(src["source"], src.get("options", {})), 20000))
        random.Random(f"{seed}:{domain}").shuffle(pool)
        taken = []
        for rec in pool:
            ids = chat_ids(tokenizer, rec["prompt"])
            if len(ids) <= max_prompt_tokens:
                taken.append({"domain": domain, "id": str(rec["id"]), "prompt": rec["prompt"], "prompt_ids": ids})
            if len(taken) == src["n"]:
                break
        if len(taken) < 3:
            raise UserError(
                f"data.domains.{domain}: only {len(taken)} prompts fit max_prompt_tokens={max_prompt_tokens}; raise it"
            )
        n_train = round(split[0] * len(taken))
        n_val = max(1, round(split[1] * len(taken)))
        for i, row in enumerate(taken):
            row["split"] = "train" if i < n_train else "val" if i < n_train + n_val else "heldout"
        rows.extend(taken)
    return rows
