"""Where an engine's start-up goes: build and warm-up of every cache, on a GPU, in a fresh process.

python -m bench.startup [shapes=qwen-coder] [heads=7] [draft_vocab=32768] [max_len=2048] [gamma=5]
                        [compile=static] [profile=FILE.prof] [out=FILE.json]

Random weights of a recipe's real shapes (loading is not timed here: decode.py prints it), so no
model package is needed: the target, `heads` EAGLE-3 heads and, for qwen-coder, the 0.5B black-box
drafter, plus the n-gram arm. Prints and writes SpecEngine.warmup_profile (seconds and graphs per
cache, then the first requests), the total, and the target's graphed step at widths 1 and γ+1 (what
a compile setting costs per step). Run it twice with the same TORCHINDUCTOR_CACHE_DIR to see a cold
and a warm compile cache; `profile=` keeps a cProfile of the warm-up.
"""

from __future__ import annotations

import cProfile
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.shapes import QWEN25_05B, QWEN25_15B, SMOLLM2_135M
from metasd_train.cli.args import check_ranges, parse
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.head_arm import HeadArm
from metasd_train.errors import UserError, one_line_errors
from metasd_train.models.head import build_head
from metasd_train.models.random_init import random_lm

# shapes -> (target config and arch, black-box drafter config or None); the GGUF target's head is untied (#18)
SHAPES = {
    "qwen-coder": ((dict(QWEN25_15B, tie_word_embeddings=False), "qwen2"), QWEN25_05B),
    "smollm2": ((SMOLLM2_135M, "llama"), None),
}


@dataclass
class StartupArgs:
    shapes: str = "qwen-coder"
    heads: int = 7
    draft_vocab: int = 32768
    max_len: int = 2048
    gamma: int = 5
    compile: str = "static"
    profile: str = ""  # cProfile output of the warm-up ("" = none)
    out: str = ""  # JSON of the profile ("" = print only)


def parse_args(argv: list[str]) -> StartupArgs:
    args = parse(StartupArgs, argv)
    if args.shapes not in SHAPES:
        raise UserError(f"shapes={args.shapes!r} is not known; choose one of: {', '.join(SHAPES)}")
    check_ranges(args, [("heads", lambda v: v >= 0, ">= 0"), ("gamma", lambda v: v >= 1, ">= 1")])
    return args


def ensemble(args: StartupArgs, device: torch.device):
    (config, arch), drafter = SHAPES[args.shapes]
    target = random_lm(config, arch, 0).to(device, torch.bfloat16).eval()
    vocab = config["vocab_size"]
    counts = torch.arange(vocab, 0, -1, dtype=torch.float64)  # any order: the timing does not read it
    heads = [build_head(target, min(args.draft_vocab, vocab), counts, eos_ids=[0], seed=i) for i in range(args.heads)]
    arms = [HeadArm(f"head{i}", h, target.get_input_embeddings(), vocab, args.gamma) for i, h in enumerate(heads)]
    if drafter is not None:
        arms.append(ModelArm("drafter", random_lm(drafter, arch, 1).to(device, torch.bfloat16).eval(), vocab, 4))
    return target, [*arms, NgramArm("ngram", vocab, gamma=args.gamma)]


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError("bench.startup times CUDA graph capture: run it on a machine with a GPU")
    device = torch.device("cuda")
    target, arms = ensemble(args, device)
    start = time.perf_counter()
    engine = SpecEngine(target, arms, eos_ids=[0], fast=True, max_len=args.max_len, compile=args.compile)
    built = time.perf_counter() - start
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    warm = engine.warmup()
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    widths = sorted({1, args.gamma + 1})  # what the setting costs per step, not only at start-up
    step_ms = {w: round(1000 * engine.forward_seconds(engine.target, w, reps=50), 4) for w in widths}
    report = {"args": vars(args), "card": torch.cuda.get_device_name(), "torch": torch.__version__,
              "build_s": round(built, 3), "warmup_s": round(warm, 3), "by_cache": engine.warmup_profile,
              "target_step_ms_by_width": step_ms}  # fmt: skip
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
