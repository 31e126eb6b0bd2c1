"""Greedy losslessness on a device, per dtype: our engine (arms switched at random every round) and
HF assisted generation, each compared token by token with the target's own HF greedy generate.

python bench/lossless.py prompts=question.jsonl [n=12] [max_new_tokens=128] [dtypes=fp32,bf16] [layers=4]
"""

from __future__ import annotations

import json
import sys
import time

import torch
from omegaconf import OmegaConf

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.data.prompts import chat_ids
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.models import load_model
from metasd_train.models.drafters import truncated
from metasd_train.pipeline.decoding import read_questions
from metasd_train.pipeline.ensemble import eos_ids


def main(argv):
    a = OmegaConf.merge(
        OmegaConf.create({"prompts": "", "n": 12, "max_new_tokens": 128, "dtypes": "fp32,bf16", "layers": 4}),
        OmegaConf.from_dotlist(argv),
    )
    out = {}
    for dtype in str(a.dtypes).split(","):
        t = load_model({"name": "smollm2-135m-instruct", "dtype": dtype}, "auto")
        model, tok = t.model, t.tokenizer
        eos = eos_ids(model, tok)
        drafter = truncated(model, a.layers)
        engine = SpecEngine(
            model,
            [ModelArm("trunc", drafter, model.config.vocab_size, 4), NgramArm("ngram", model.config.vocab_size, 4)],
            eos_ids=eos,
        )
        chooser = BanditChooser(RandomArm(2, seed=0))
        drafter.generation_config.num_assistant_tokens = 4
        drafter.generation_config.num_assistant_tokens_schedule = "constant"
        drafter.generation_config.assistant_confidence_threshold = 0.0
        stats = {
            "prompts": 0,
            "engine_mismatch": 0,
            "assisted_mismatch": 0,
            "tokens": 0,
            "engine_s": 0.0,
            "tau_rounds": 0,
        }
        for q in read_questions(a.prompts)[: a.n]:
            ids = chat_ids(tok, q["turns"][0])
            x = torch.tensor([ids], device=model.device)
            ref = model.generate(
                x, do_sample=False, max_new_tokens=a.max_new_tokens, eos_token_id=eos, pad_token_id=eos[0]
            )[0, len(ids) :].tolist()
            hfa = model.generate(
                x,
                do_sample=False,
                max_new_tokens=a.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=eos[0],
                assistant_model=drafter,
            )[0, len(ids) :].tolist()
            t0 = time.perf_counter()
            gen = engine.generate(ids, a.max_new_tokens, chooser)
            stats["engine_s"] += time.perf_counter() - t0
            stats["prompts"] += 1
            stats["tokens"] += len(gen.tokens)
            stats["tau_rounds"] += len(gen.rounds)
            stats["engine_mismatch"] += gen.tokens != ref
            stats["assisted_mismatch"] += hfa != ref
        stats["tau"] = stats["tokens"] / stats.pop("tau_rounds")
        out[f"{dtype} on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"] = stats
        print(dtype, stats, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
