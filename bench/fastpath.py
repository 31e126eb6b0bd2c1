"""Profile the engine's eager and fast (static cache + CUDA graphs) paths without a trained run.

python -m bench.fastpath prompts=question.jsonl [n=6] [max_new_tokens=256] [layers=4] [gamma=4] [dtype=bf16]
                         [out=DIR] [hf=true]

Target: SmolLM2-135M-Instruct; arms: the target alone (no drafts), prompt lookup, and an untrained
truncation of the target's first `layers` blocks. Reports tokens/s, τ, where a round's time goes,
graph-capture time, and whether the paths agree token for token (fast vs the same code without
graphs, fast vs eager, fast vs HF greedy).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.bench import aggregate, pick_prompts, run_engine, run_hf
from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm
from metasd_train.data.prompts import chat_ids
from metasd_train.decoding.arms import ModelArm, NgramArm, NoDraftArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models import load_model
from metasd_train.models.drafters import truncated
from metasd_train.pipeline.ensemble import eos_ids

ARGS = {
    "prompts": "",
    "n": 6,
    "max_new_tokens": 256,
    "layers": 4,
    "gamma": 4,
    "dtype": "bf16",
    "out": "",
    "hf": True,
    "device": "auto",
    "compile": False,
    "eager": True,
}


def build(target, vocab, eos, args, fast: bool, graphs: bool = True) -> SpecEngine:
    arms = [
        NoDraftArm("target_only", vocab),
        NgramArm("ngram", vocab, gamma=args.gamma),
        ModelArm(f"trunc{args.layers}", truncated(target, args.layers), vocab, gamma=args.gamma),
    ]
    engine = SpecEngine(target, arms, SamplingParams(), eos_ids=eos, fast=fast, max_len=2048)
    if fast and not graphs:
        for lm in [engine.target, *engine.lms.values()]:
            lm.graphs = False
    return engine


def profile_round(engine, prompt, n, arm: int) -> list[str]:
    """Top CUDA and CPU ops of one generation with a fixed arm (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
    with profile(activities=[ProfilerActivity.CPU, *cuda]) as prof:
        gen = engine.generate(prompt, n, BanditChooser(FixedArm(len(engine.arms), arm)))
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=15)
    return [f"{engine.arms[arm].name}: {len(gen.rounds)} rounds, {gen.seconds:.3f}s", table]


def main(argv: list[str]) -> None:
    args = OmegaConf.merge(OmegaConf.create(ARGS), OmegaConf.from_dotlist(argv))
    loaded = load_model({"name": "smollm2-135m-instruct", "dtype": args.dtype}, args.device)
    target, tok = loaded.model, loaded.tokenizer
    vocab = target.config.vocab_size
    qs = pick_prompts(args.prompts, max(1, args.n // 3))[: args.n]
    prompts = [(chat_ids(tok, q["turns"][0]), q["category"]) for q in qs]
    n = int(args.max_new_tokens)
    results, tokens = {}, {}
    eos = eos_ids(target, tok)
    if args.hf:
        run_hf(target, prompts[:1], 8, eos, do_sample=False)
        rows = run_hf(target, prompts[:2], n, eos, do_sample=False)
        results["hf_generate_eager (2 prompts)"] = aggregate(rows)["all"]
    if args.compile:  # the fastest autoregressive baseline: HF static cache + torch.compile
        t = time.perf_counter()
        run_hf(target, prompts[:1], n, eos, do_sample=False, cache_implementation="static")
        results["hf_static_compile_warmup_s"] = time.perf_counter() - t
        rows = run_hf(target, prompts, n, eos, do_sample=False, cache_implementation="static")
        results["hf_generate_static_compile"] = aggregate(rows)["all"]
        tokens["hf_static_compile"] = [r["tokens"] for r in rows]
    t = time.perf_counter()
    fast = build(target, vocab, eos, args, fast=True)
    capture_s = fast.warmup()
    startup = {"engine_build_s": time.perf_counter() - t - capture_s, "graph_capture_s": capture_s}
    engines = {"fast": fast}
    if args.eager:
        engines["eager"] = build(target, vocab, eos, args, fast=False)
        engines["static_nograph"] = build(target, vocab, eos, args, fast=True, graphs=False)
    for path, engine in engines.items():
        run_engine(engine, BanditChooser(FixedArm(3, 1)), prompts[:1], 16)  # warm
        for i, arm in enumerate(engine.arms):
            rows = run_engine(engine, BanditChooser(FixedArm(3, i)), prompts, n)
            results[f"{path}:{arm.name}"] = aggregate(rows)["all"]
            tokens[f"{path}:{arm.name}"] = [r["tokens"] for r in rows]
            print(f"{path}:{arm.name:<14} {results[f'{path}:{arm.name}']['tokens_per_s']:8.1f} tok/s", flush=True)
    agree = {
        f"{a}=={b}:{arm.name}": sum(x == y for x, y in zip(tokens[f"{a}:{arm.name}"], tokens[f"{b}:{arm.name}"]))
        for a, b in (("fast", "static_nograph"), ("fast", "eager"))
        for arm in fast.arms
        if b in engines
    }
    if "hf_static_compile" in tokens:
        for arm in fast.arms:
            agree[f"fast:{arm.name}==hf_static_compile"] = sum(
                x == y for x, y in zip(tokens[f"fast:{arm.name}"], tokens["hf_static_compile"])
            )
    prof = profile_round(fast, prompts[0][0], 64, 1) + profile_round(fast, prompts[0][0], 64, 2)
    meta = {
        "card": torch.cuda.get_device_name() if target.device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "prompts": f"{args.prompts} ({len(prompts)})",
        "max_new_tokens": n,
        "startup": startup,
        "prompts_agreeing": agree,
    }
    report = json.dumps({"meta": meta, "results": results}, indent=1)
    print(report)
    print("\n".join(prof))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fastpath.json").write_text(report)
        (Path(args.out) / "fastpath_profile.txt").write_text("\n".join(prof))


if __name__ == "__main__":
    main(sys.argv[1:])
