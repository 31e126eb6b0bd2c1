"""Profile of the fast path per forward variant: kernels and time per forward, start-up, tokens/s.

python -m bench.fastpath [target=smollm2-135m-instruct] [prompts=question.jsonl] [n=6] [max_new_tokens=256]
                         [gamma=4] [layers=4] [dtype=bf16] [variants=hf,none,fused,layer] [warm=true] [out=DIR]

Variants: `hf` is the model's own forward over the static cache (the old path); the others are
fastmodel.FastModel with that `compile` setting. For each variant: the target at width 1 and at
width gamma+1, and a drafter step (the target's first `layers` blocks, width 1): CUDA kernels per
forward (torch.profiler over one forward without graphs) and milliseconds per forward (median of
CUDA-graph replays, CUDA events); start-up (build + compile + capture of every graph of target and
drafter) cold, in this process with an empty inductor cache of its own, and warm (warm=true), in
a fresh process over that cache; tokens/s of the target alone through the engine. Baseline: HF
`generate` with a static cache (compiled by HF), warmed on every prompt before the timed pass.
Without prompts=, six built-in prompts. Writes fastpath.json and fastpath.md under out=DIR.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm
from metasd_train.data.prompts import chat_ids, read_questions
from metasd_train.decoding.arms import NoDraftArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.hf_generate import hf_generate
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.decoding.static_cache import StaticLM, default_widths
from metasd_train.models import load_model
from metasd_train.models.drafters import truncated
from metasd_train.models.tokenizers import eos_ids

ARGS = {
    "target": "smollm2-135m-instruct",
    "prompts": "",
    "n": 6,
    "max_new_tokens": 256,
    "gamma": 4,
    "layers": 4,
    "dtype": "bf16",
    "max_len": 2048,
    "variants": "hf,none,fused,layer",
    "warm": True,
    "hf_static": True,
    "out": "",
    "device": "cuda",
    "startup_only": "",  # internal: time one variant's start-up in this (fresh) process, print JSON
}
BUILTIN_PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Explain the difference between a list and a tuple in Python.",
    "What is 17 * 24? Show your working.",
    "Solve for x: 3x + 7 = 22.",
    "Give me three tips for a good night's sleep.",
    "Summarise the plot of Romeo and Juliet in a few sentences.",
]
AT = 100  # profiled forwards feed positions from here: the smallest span (256) is attended


def static_lm(model, variant: str, args) -> StaticLM:
    """The target's or drafter's static cache with the forward `variant` names."""
    fast = variant != "hf"
    widths = default_widths(args.gamma)
    lm = StaticLM(model, model.config.vocab_size, args.max_len, widths, fast, variant if fast else "none")
    if fast and lm.fallback:
        print(f"{variant}: the fast forward fell back to HF's ({lm.fallback})", flush=True)
    return lm


def startup(target, drafter, variant: str, args) -> tuple[dict, float]:
    """Build target and drafter caches and capture every (width, span) graph of both; the seconds it took."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    lms = {"target": static_lm(target, variant, args), "drafter": static_lm(drafter, variant, args)}
    for lm in lms.values():
        lm.warmup()
    torch.cuda.synchronize()
    return lms, time.perf_counter() - start


@torch.inference_mode()
def kernels_per_forward(lm: StaticLM, width: int) -> int:
    """CUDA kernels launched by one forward of `width` tokens, without graphs (memcpy/memset not counted)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    ids = torch.zeros(width, dtype=torch.long, device="cuda")
    pos = torch.arange(AT, AT + width, device="cuda")
    lm.net.forward(ids, pos, lm._span(AT + width))  # compiled code runs once before the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        lm.net.forward(ids, pos, lm._span(AT + width))
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return sum(not e.name.startswith(("Memcpy", "Memset")) for e in kernels)


@torch.inference_mode()
def replay_ms(lm: StaticLM, width: int, reps: int = 50) -> float:
    """Median milliseconds of one graph replay of `width` tokens at positions AT.."""
    graph, _, pos, _ = lm._graph(width, lm._span(AT + width))
    torch.add(lm._base[width], AT, out=pos)
    return graph_ms(graph, reps)


def graph_ms(graph: torch.cuda.CUDAGraph, reps: int) -> float:
    """Median milliseconds of one replay of `graph` (CUDA events)."""
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def profile_rows(lms: dict, gamma: int) -> dict:
    rows = {}
    for name, lm, w in (("target_w1", lms["target"], 1), (f"target_w{gamma + 1}", lms["target"], gamma + 1)):
        rows[name] = {"kernels": kernels_per_forward(lm, w), "ms": replay_ms(lm, w)}
    rows["drafter_w1"] = {"kernels": kernels_per_forward(lms["drafter"], 1), "ms": replay_ms(lms["drafter"], 1)}
    return rows


def target_alone(target, lm: StaticLM, prompts, n: int, eos: list[int]) -> tuple[float, list[list[int]]]:
    """Tokens/s of the engine with the target alone over `lm`, after one untimed request."""
    vocab = target.config.vocab_size
    arms = [NoDraftArm("target_only", vocab)]
    engine = SpecEngine(target, arms, SamplingParams(), eos_ids=eos, fast=True, max_len=lm.max_len)
    engine.target = lm  # the variant's cache in place of the engine's default one
    chooser = BanditChooser(FixedArm(1, 0))
    engine.generate(prompts[0], 16, chooser)
    gens = [engine.generate(p, n, chooser) for p in prompts]
    return sum(len(g.tokens) for g in gens) / sum(g.seconds for g in gens), [g.tokens for g in gens]


def hf_static(target, prompts, n: int, eos: list[int]) -> dict:
    """HF generate with a static cache: every prompt once untimed (a new shape recompiles), then timed."""
    start = time.perf_counter()
    for p in prompts:
        hf_generate(target, p, n, eos, static=True)
    warmup_s = time.perf_counter() - start
    runs = [hf_generate(target, p, n, eos, static=True) for p in prompts]
    tps = sum(len(t) for t, _ in runs) / sum(s for _, s in runs)
    return {"tokens_per_s": tps, "warmup_s": warmup_s, "tokens": [t for t, _ in runs]}


def warm_startup(variant: str, args, cache: str) -> float | None:
    """Start-up of `variant` in a fresh process over the inductor cache this process filled."""
    keys = ("target", "dtype", "gamma", "layers", "max_len", "device")
    cmd = [sys.executable, "-m", "bench.fastpath", f"startup_only={variant}", *(f"{k}={args[k]}" for k in keys)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        print(f"warm start-up of {variant} failed:\n{done.stderr[-2000:]}", flush=True)
        return None
    return json.loads(lines[-1])["startup_s"]


def load(args):
    loaded = load_model({"name": args.target, "dtype": args.dtype}, args.device)
    return loaded.model, loaded.tokenizer, truncated(loaded.model, args.layers)


def pick(args, tok) -> list[list[int]]:
    if not args.prompts:
        return [chat_ids(tok, q) for q in BUILTIN_PROMPTS][: args.n]
    questions = sorted(read_questions(args.prompts), key=lambda q: q["category"])  # spread over categories
    step = max(1, len(questions) // args.n)
    return [chat_ids(tok, q["turns"][0]) for q in questions[::step][: args.n]]


def run_variant(variant: str, target, drafter, prompts, eos, args) -> dict:
    cache = tempfile.mkdtemp(prefix=f"fastpath-{variant}-")
    # cold: empty on-disk caches and nothing traced in memory (kernels identical to an earlier variant's
    # are still reused from inductor's in-memory cache); warm_startup reruns over these caches
    os.environ.update(TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
    torch._dynamo.reset()
    lms, cold = startup(target, drafter, variant, args)
    row = {"fallback": lms["target"].fallback, "startup_cold_s": cold, **profile_rows(lms, args.gamma)}
    row["tokens_per_s"], row["tokens"] = target_alone(target, lms["target"], prompts, args.max_new_tokens, eos)
    print(f"{variant:<8} {row['tokens_per_s']:8.1f} tok/s  start-up {cold:.1f}s", flush=True)
    del lms
    gc.collect()
    torch.cuda.empty_cache()
    if args.warm and variant not in ("hf", "none"):
        row["startup_warm_s"] = warm_startup(variant, args, cache)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def markdown(meta: dict, rows: dict, hf: dict | None, gamma: int) -> str:
    w = gamma + 1
    head = (
        f"| variant | target w1 kernels | target w1 ms | target w{w} kernels | target w{w} ms | drafter w1 kernels "
        "| drafter w1 ms | start-up cold s | start-up warm s | tokens/s (target alone) | same tokens as HF static |"
    )
    lines = [f"# Fast path profile: {meta['target']} ({meta['dtype']}) on {meta['card']}", "", head, "|---" * 11 + "|"]
    for v, r in rows.items():
        warm = r.get("startup_warm_s")
        cells = [r["target_w1"]["kernels"], f"{r['target_w1']['ms']:.3f}", r[f"target_w{w}"]["kernels"]]
        cells += [f"{r[f'target_w{w}']['ms']:.3f}", r["drafter_w1"]["kernels"], f"{r['drafter_w1']['ms']:.3f}"]
        cells += [f"{r['startup_cold_s']:.1f}", "-" if warm is None else f"{warm:.1f}", f"{r['tokens_per_s']:.1f}"]
        cells.append(r.get("agree", "-"))
        lines.append(f"| {v} | " + " | ".join(str(c) for c in cells) + " |")
    if hf:
        lines += ["", f"HF `generate`, static cache + compile: {hf['tokens_per_s']:.1f} tokens/s "]
        lines[-1] += f"(warm-up over every prompt {hf['warmup_s']:.0f} s)."
    lines += ["", "```", json.dumps({k: v for k, v in meta.items() if k != "card"}, indent=1), "```", ""]
    return "\n".join(lines)


def startup_only(args) -> None:
    target, _, drafter = load(args)
    target(torch.zeros(1, 1, dtype=torch.long, device=args.device))  # CUDA context, cuBLAS handles
    _, seconds = startup(target, drafter, args.startup_only, args)
    print(json.dumps({"startup_s": seconds}))


def main(argv: list[str]) -> None:
    args = OmegaConf.merge(OmegaConf.create(ARGS), OmegaConf.from_dotlist(argv))
    if args.startup_only:
        return startup_only(args)
    target, tok, drafter = load(args)
    target(torch.zeros(1, 1, dtype=torch.long, device=args.device))  # CUDA context, cuBLAS handles
    prompts, eos, n = pick(args, tok), eos_ids(target, tok), int(args.max_new_tokens)
    hf = hf_static(target, prompts, n, eos) if args.hf_static else None
    rows = {v: run_variant(v, target, drafter, prompts, eos, args) for v in str(args.variants).split(",")}
    for r in rows.values():
        if hf:
            r["agree"] = f"{sum(a == b for a, b in zip(r['tokens'], hf['tokens']))}/{len(prompts)}"
        del r["tokens"]
    meta = {
        "card": torch.cuda.get_device_name(),
        "target": args.target,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "prompts": f"{args.prompts or 'built-in'} ({len(prompts)})",
        "max_new_tokens": n,
        "gamma": args.gamma,
        "drafter_layers": args.layers,
        "profiled_at_position": AT,
        "startup": "build + compile + capture of every (width, span) graph of target and drafter; cold: empty "
        "inductor/triton caches of its own, in this process; warm: a fresh process over those caches",
    }
    report = {
        "meta": meta,
        "variants": rows,
        "hf_static_compile": hf and {k: v for k, v in hf.items() if k != "tokens"},
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fastpath.json").write_text(json.dumps(report, indent=1))
        (Path(args.out) / "fastpath.md").write_text(markdown(meta, rows, hf, args.gamma))


if __name__ == "__main__":
    main(sys.argv[1:])
