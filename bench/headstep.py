"""What one drafted token of an EAGLE-3 head costs against one target step, on a GPU.

python -m bench.headstep [target=smollm2-135m-instruct or random-smollm2-135m] [draft_vocab=16384] [out=DIR]
                         [gamma=5] [dtype=bf16] [max_len=2048] [variants=plain,none,fused,layer]

A random-init head of the real shapes (models.head.build_head) over the real target; medians of
CUDA-graph replays timed with CUDA events, at positions from fastpath.AT (the smallest span):
the target step (width 1, fastmodel compile=fused) and, per variant, the head's chained step: one
draft inside HeadRuntime's greedy chain graph (embedding, head step, argmax, id mapping), taken as
(chain of gamma drafts - chain of 1) / (gamma - 1). Variant `plain` is DraftHead.step (the path
before decoding/fasthead.py); the others are FastHead under that compile setting. Per variant also
CUDA kernels per chained step (one chain profiled without graphs) and the start-up of the head's
runtime (build, compile and capture of every graph HeadRuntime.warmup takes; in one process, so a
variant reuses what earlier ones compiled). Writes headstep.json and headstep.md under out=DIR.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.fastpath import AT, graph_ms, replay_ms
from bench.shapes import SMOLLM2_135M
from metasd_train.cli.args import check_ranges, parse
from metasd_train.decoding.head_arm import HeadRuntime
from metasd_train.decoding.static_cache import StaticLM, default_widths
from metasd_train.errors import UserError, one_line_errors
from metasd_train.models import pick_dtype
from metasd_train.models.head import build_head

VARIANTS = ("plain", "none", "fused", "layer")


@dataclass
class HeadStepArgs:
    target: str = "smollm2-135m-instruct"
    draft_vocab: int = 16384  # K: rows of the head's lm_head
    out: str = ""  # folder for headstep.json and headstep.md ("" = print only)
    gamma: int = 5  # drafts per chain (the head recipe's gamma)
    dtype: str = "bf16"
    max_len: int = 2048
    variants: str = ",".join(VARIANTS)
    reps: int = 200  # graph replays per median


def parse_args(argv: list[str]) -> HeadStepArgs:
    args = parse(HeadStepArgs, argv)
    check_ranges(args, [("gamma", lambda v: v >= 2, ">= 2"), ("draft_vocab", lambda v: v >= 1, ">= 1")])
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        raise UserError(f"variants: {bad[0]!r} is not a variant; choose from: {', '.join(VARIANTS)}")
    return args


def chain_ms(rt: HeadRuntime, k: int, reps: int) -> float:
    """Median milliseconds of the greedy chain graph of k drafts, its steps at positions AT.."""
    graph, _, _, pos, _ = rt._graph(("chain", k), next(sp for sp in rt.spans if sp >= AT + k))
    with torch.inference_mode():  # an engine warmed up under inference mode made `pos` an inference tensor
        torch.arange(AT, AT + pos.shape[0], device=pos.device, out=pos)
    return graph_ms(graph, reps)


def chained_step_ms(rt: HeadRuntime, k: int, reps: int = 200) -> float:
    """Milliseconds of one link of a captured greedy chain: (chain of k - chain of 1) / (k - 1)."""
    return (chain_ms(rt, k, reps) - chain_ms(rt, 1, reps)) / (k - 1)


def chain_kernels(rt: HeadRuntime, k: int) -> int:
    """CUDA kernels of one greedy chain of k drafts without graphs (memcpy/memset not counted)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    d, vocab = rt.head.config.hidden_size, rt.head.config.draft_vocab_size
    hidden = torch.zeros(1, d, device=rt.device, dtype=rt.cache.k.dtype)
    logits = torch.zeros(1, vocab, device=rt.device, dtype=rt.cache.k.dtype)
    pos, span = torch.arange(AT, AT + k - 1, device=rt.device), next(sp for sp in rt.spans if sp >= AT + k)
    rt._chain(hidden, logits, pos, span, k)  # compiled code runs once before the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        rt._chain(hidden, logits, pos, span, k)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return sum(not e.name.startswith(("Memcpy", "Memset")) for e in kernels)


def head_row(head, embed, variant: str, args: HeadStepArgs) -> dict:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fast = variant != "plain"
    rt = HeadRuntime(head, embed, None, args.max_len, True, args.gamma, fast, variant if fast else "none")
    rt.warmup()
    torch.cuda.synchronize()
    startup = time.perf_counter() - start
    k = args.gamma
    step = chained_step_ms(rt, k, args.reps)
    kernels = (chain_kernels(rt, k) - chain_kernels(rt, 1)) / (k - 1)
    return {"step_ms": step, "kernels_per_step": kernels, "startup_s": startup, "fallback": rt.fallback}


@torch.inference_mode()
def headstep(model, args: HeadStepArgs) -> dict:
    """Target step and head chained step (per variant) for a loaded target `model` on CUDA."""
    vocab = model.config.vocab_size
    lm = StaticLM(model, vocab, args.max_len, default_widths(args.gamma), compile="fused")
    target_ms = replay_ms(lm, 1, args.reps)
    counts = torch.zeros(vocab, dtype=torch.long)  # any counts: the timing does not depend on which K ids
    head = build_head(model, min(args.draft_vocab, vocab), counts, eos_ids=[]).eval()
    rows = {v: head_row(head, model.get_input_embeddings(), v, args) for v in args.variants.split(",")}
    for row in rows.values():
        row["over_target_step"] = row["step_ms"] / target_ms
    meta = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        **asdict(args),
        "target_step_ms": target_ms,
        "head_shapes": {k: v for k, v in asdict(head.config).items() if k != "feature_layers"},
    }
    return {"meta": meta, "variants": rows}


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [
        f"# Head step vs target step: {m['target']} ({m['dtype']}), K = {m['draft_vocab']}, on {m['card']}",
        "",
        f"Target step (width 1, compile=fused): {m['target_step_ms']:.4f} ms.",
        "",
        "| head variant | chained step ms | / target step | kernels per step | head start-up s |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["variants"].items():
        cells = [f"{r['step_ms']:.4f}", f"{100 * r['over_target_step']:.1f}%", f"{r['kernels_per_step']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['startup_s']:.1f} |")
    lines += ["", "```", json.dumps({k: v for k, v in m.items() if k != "card"}, indent=1), "```", ""]
    return "\n".join(lines)


# random weights of a real model's shapes (target=random-NAME): the timing needs no packaged weights
RANDOM_SHAPES = {"random-smollm2-135m": SMOLLM2_135M}


def target_model(args: HeadStepArgs):
    """The target: a packaged or local model, or random weights of the shapes RANDOM_SHAPES names."""
    if args.target in RANDOM_SHAPES:
        from metasd_train.models.random_init import random_lm

        return random_lm(RANDOM_SHAPES[args.target], "llama", 0).to(
            "cuda", pick_dtype(args.dtype, torch.device("cuda"))
        )
    from metasd_train.models import load_model

    return load_model({"name": args.target, "dtype": args.dtype}, "cuda").model


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    model = target_model(args)
    report = headstep(model, args)
    print(markdown(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "headstep.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "headstep.md").write_text(markdown(report))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
