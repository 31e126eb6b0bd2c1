"""Greedy losslessness on a device, per dtype: our engine (arms switched at random every round) and
HF assisted generation, each compared token by token with the target's own HF greedy generate.

python -m bench.lossless prompts=question.jsonl [n=12] [max_new_tokens=128] [dtypes=fp32,bf16] [layers=4] [out=FILE.json commit=SHA]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import make_policy
from metasd_train.cli.args import parse
from metasd_train.data.prompts import chat_ids, read_questions
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.hf_generate import assisted, hf_generate
from metasd_train.errors import one_line_errors
from metasd_train.models import load_model
from metasd_train.models.drafters import truncated
from metasd_train.models.tokenizers import eos_ids


@dataclass
class LosslessArgs:
    prompts: str = ""  # question.jsonl; the first turn of the first `n` questions
    n: int = 12
    max_new_tokens: int = 128
    dtypes: str = "fp32,bf16"
    layers: int = 4  # the untrained drafter: the target's first `layers` blocks
    gamma: int = 4
    out: str = ""  # a JSON file for the results ("" = print only)
    commit: str = ""  # the commit measured, written into out


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_dtype(a: LosslessArgs, dtype: str) -> dict:
    """Mismatches against HF greedy for our engine and HF assisted generation, on one dtype."""
    t = load_model({"name": "smollm2-135m-instruct", "dtype": dtype}, "auto")
    model, tok = t.model, t.tokenizer
    eos, vocab = eos_ids(model, tok), model.config.vocab_size
    drafter = truncated(model, a.layers)
    arms = [ModelArm("trunc", drafter, vocab, a.gamma), NgramArm("ngram", vocab, a.gamma)]
    engine = SpecEngine(model, arms, eos_ids=eos)
    chooser = BanditChooser(make_policy("random", len(arms), {"seed": 0}))
    stats = {"prompts": 0, "engine_mismatch": 0, "assisted_mismatch": 0, "tokens": 0, "engine_s": 0.0}
    stats["engine_common_prefix"] = []  # per prompt: tokens equal to HF greedy before the first difference
    rounds = 0
    for q in read_questions(a.prompts)[: a.n]:
        ids = chat_ids(tok, q["turns"][0])
        ref, _ = hf_generate(model, ids, a.max_new_tokens, eos)
        hfa, _ = hf_generate(model, ids, a.max_new_tokens, eos, **assisted(drafter, a.gamma))
        gen = engine.generate(ids, a.max_new_tokens, chooser)
        stats["engine_s"] += gen.seconds
        stats["prompts"] += 1
        stats["tokens"] += len(gen.tokens)
        stats["engine_mismatch"] += gen.tokens != ref
        stats["engine_common_prefix"].append(common_prefix(gen.tokens, ref))
        stats["assisted_mismatch"] += hfa != ref
        rounds += len(gen.rounds)
    stats["tau"] = stats["tokens"] / max(rounds, 1)
    return stats


def main(argv: list[str]) -> None:
    a = parse(LosslessArgs, argv, required=("prompts",))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out = {}
    for dtype in a.dtypes.split(","):
        out[f"{dtype} on {device}"] = check_dtype(a, dtype)
        print(dtype, out[f"{dtype} on {device}"], flush=True)
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"commit": a.commit, **out}, indent=1) + "\n")


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
