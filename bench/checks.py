"""Same tokens? In fp32 the fast path with the shipped policy against HF greedy on every bench
prompt (losslessness); in the bench's dtype, the fast path against our eager engine."""

from __future__ import annotations

from bench.configs import fixed
from bench.harness import Bench, engine_stats
from metasd_train.bandit.chooser import chooser_for
from metasd_train.decoding.assemble import make_engine
from metasd_train.decoding.hf_generate import hf_generate
from metasd_train.export.ensemble import load_ensemble
from metasd_train.models.tokenizers import eos_ids

FP32_KEY = "fp32_fast_path_vs_hf_greedy_same_tokens"


def fp32_vs_hf_greedy(b: Bench, n: int) -> str:
    """The exported policy switching arms on the fast path must give HF greedy's tokens exactly."""
    ens = load_ensemble(b.args.run, b.args.device, dtype="fp32")
    model, tok = ens.target.model, ens.target.tokenizer
    chooser, feedback = chooser_for(ens)
    engine = make_engine(model, tok, ens.arms, b.decode_cfg(), full_feedback=feedback == "full")
    engine.warmup()
    eos = eos_ids(model, tok)
    same = sum(engine.generate(p.ids, n, chooser).tokens == hf_generate(model, p.ids, n, eos)[0] for p in b.prompts)
    return f"{same}/{len(b.prompts)} (fast={engine.fast}, {n} tokens, policy {b.shipped()['policy']})"


def fast_vs_eager(b: Bench, k: int) -> tuple[str, str]:
    """The fast path and our eager engine, first arm fixed, on the first `k` prompts, in the bench's dtype."""
    key = f"{str(b.model.dtype).removeprefix('torch.')}_fast_vs_eager_engine_same_tokens"
    fast = b.engine()
    if not fast.fast:
        return key, "skipped: no fast path on this device (both sides would be the eager engine)"
    eager = make_engine(b.model, b.ens.target.tokenizer, b.ens.arms, b.decode_cfg(fast=False))
    prompts = b.prompts[:k]
    same = sum(
        x["tokens"] == y["tokens"]
        for x, y in zip(engine_stats(fast, fixed(0), prompts, b.n), engine_stats(eager, fixed(0), prompts, b.n))
    )
    return key, f"{same}/{len(prompts)} ({b.ens.arm_names[0]} arm, {b.n} tokens)"


def run_checks(b: Bench) -> dict[str, str]:
    out = {}
    if b.args.check_eager:
        key, value = fast_vs_eager(b, b.args.check_eager)
        out[key] = value
    if b.args.check_fp32:
        out[FP32_KEY] = fp32_vs_hf_greedy(b, b.args.check_fp32)
    print(out, flush=True)
    return out
