"""Domain prompts: take, filter, split by seed; encode with the target's chat template."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from metasd_train.data.sources import load_source
from metasd_train.errors import UserError


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
        pool = shuffled(src["source"], src.get("options", {}), 20000, f"{seed}:{domain}")
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


def shuffled(source: str, options: dict, limit: int, key: str) -> list[dict]:
    """The first `limit` records of a source in an order fixed by `key` (the same config, the same rows)."""
    pool = list(itertools.islice(load_source(source, options), limit))
    random.Random(key).shuffle(pool)
    return pool


def loosely(text: str) -> str:
    """A prompt compared ignoring case and spacing (ShareGPT repeats prompts loosely)."""
    return " ".join(text.split()).casefold()


def written_examples(
    written: dict, tokenizer, max_prompt_tokens: int, max_new_tokens: int, eos: int, taken: set[str], seed: int
) -> list[dict]:
    """Training rows {domain, id, prompt, prompt_ids, split="train", kind="written", response_ids} whose
    responses come with the source (`data.written`), none of whose prompts is in `taken` (the domain
    prompts of every split: held-out prompts stay unseen), compared ignoring case and spacing. A
    response is cut to `max_new_tokens`, as a generation would be; one that fits ends with `eos`, as
    the target's answers do."""
    rows, seen = [], {loosely(t) for t in taken}
    for domain, src in written.items():
        options = {**dict(src.get("options", {})), "answers": True}
        pool = shuffled(src["source"], options, 4 * src["n"] + 1000, f"{seed}:written:{domain}")
        before = len(rows)
        for rec in pool:
            if not isinstance(rec.get("response"), str):
                raise UserError(
                    f"data.written.{domain}: source {src['source']!r} ships no responses; "
                    "data.written takes sources that do (sharegpt)"
                )
            if loosely(rec["prompt"]) in seen or not rec["response"].strip():
                continue
            ids = chat_ids(tokenizer, rec["prompt"])
            if len(ids) > max_prompt_tokens:
                continue
            response = tokenizer(rec["response"], add_special_tokens=False)["input_ids"]
            response = response[:max_new_tokens] if len(response) >= max_new_tokens else [*response, eos]
            rows.append({"domain": domain, "id": str(rec["id"]), "prompt": rec["prompt"], "prompt_ids": ids,
                         "split": "train", "kind": "written", "response_ids": response})  # fmt: skip
            seen.add(loosely(rec["prompt"]))
            if len(rows) - before == src["n"]:
                break
    return rows


def read_questions(path: str) -> list[dict]:
    """question.jsonl (MT-bench / Spec-Bench format): {question_id, category, turns[]} per line, validated
    whole before any model is loaded, so a bad line costs nothing."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompts file not found: {path}; pass a question.jsonl (question_id, category, turns[])")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; pass a question.jsonl") from None
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            out.append(_question(line, f"{path}:{i}", i))
    if not out:
        raise UserError(f"{path} holds no questions")
    return out


def _question(line: str, where: str, index: int) -> dict:
    try:
        q = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg}); one question object per line") from None
    if not isinstance(q, dict):
        raise UserError(f"{where} is not a JSON object; one question object per line")
    turns = q.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise UserError(f"{where} needs a non-empty 'turns' list of non-empty strings")
    category = q.get("category", "default")
    if not isinstance(category, str):
        raise UserError(f"{where}: 'category' must be a string, got {category!r}")
    return {"question_id": q.get("question_id", index), "category": category, "turns": turns}
