"""Benchmark: our engine and its baselines on the same prompts, in one run on one card.

python -m bench.bench run=RUN_DIR prompts=RUN_DIR/data/heldout.jsonl [per_category=2] [max_new_tokens=128]
                      [out=DIR] [commit=SHA] [policies=ucb,exp3] [budget_s=0] [timed=false] ...

Times (bench/configs.py) HF static+compile, our target alone, each fixed arm, the shipped policy in
persistent and paper mode, the per-category oracle (hindsight), optional reference policies, HF
eager and assisted on a few prompts, and sampled decoding; checks (bench/checks.py) fp32
losslessness against HF greedy on every prompt; writes results to `out` and the recipe's entry of
bench/results/headline.json (bench/report.py, bench/headline.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.checks import run_checks
from bench.configs import TIMED
from bench.harness import Bench
from bench.headline import PATH, entry, recipe_of, write_headline
from bench.report import write_checks, write_results
from metasd_train.bandit.policies import POLICIES
from metasd_train.cli.args import check_ranges, parse
from metasd_train.errors import UserError, one_line_errors
from metasd_train.export.ensemble import find_export


@dataclass
class BenchArgs:
    run: str = ""  # a run directory (its export/ is loaded) or an export folder
    prompts: str = ""  # question.jsonl: question_id, category, turns[] (first turns are decoded)
    per_category: int = 2  # prompts taken per category, in file order
    max_new_tokens: int = 128
    out: str = ""  # results folder (default <run>/bench)
    headline: str = str(PATH)  # the headline file this run's recipe entry is merged into ("" = none)
    commit: str = "unknown"  # recorded in results and headline.json
    device: str = "auto"
    dtype: str | None = None  # default: the export's decode.dtype on a GPU, fp32 on a CPU (harness.bench_dtype)
    fast: bool = True  # our engine on static caches (+ CUDA graphs on a GPU)
    hf_compile: bool = True  # the baseline: HF generate, static cache, compiled by HF on CUDA
    hf_max: int = 2  # prompts (one per category) for HF eager and assisted rows (0 = none)
    assisted: str = "generalist"  # drafters for HF assisted generation, comma-separated
    policies: str = ""  # other registered policies to time for reference (not shipped), comma-separated
    sampled: bool = True  # also time the shipped policy and the target alone at sampled_t
    sampled_t: float = 0.7
    seed: int = 0
    budget_s: float = 0.0  # skip configurations that would start after this many seconds (0 = no limit)
    check_eager: int = 2  # prompts for the fast-vs-eager engine check in the bench's dtype (0 = off)
    check_fp32: int = 64  # new tokens per prompt for the fp32 fast-path-vs-HF-greedy check (0 = off)
    timed: bool = True  # false: only the checks (writes checks.json)


def parse_args(argv: list[str]) -> BenchArgs:
    args = parse(BenchArgs, argv, required=("run", "prompts"))
    check_ranges(
        args,
        [
            ("per_category", lambda v: v >= 1, ">= 1"),
            ("max_new_tokens", lambda v: v >= 1, ">= 1"),
            ("hf_max", lambda v: v >= 0, ">= 0"),
            ("check_eager", lambda v: v >= 0, ">= 0"),
            ("check_fp32", lambda v: v >= 0, ">= 0"),
        ],
    )
    for policy in [s for s in args.policies.split(",") if s]:
        if policy not in POLICIES:
            raise UserError(f"policies: {policy!r} is not a policy; choose from: {', '.join(POLICIES)}")
    return args


def bench(args: BenchArgs) -> Bench:
    """Every configuration, the checks, and the files they leave; returns what was measured."""
    b = Bench(args).load()
    recipe = recipe_of(b) if args.timed and args.headline else None  # fails before hours of timing
    if args.timed:
        for config in TIMED:
            config(b)
    b.notes.update(run_checks(b))
    out = Path(args.out) if args.out else find_export(args.run).parent / "bench"
    if not args.timed:
        write_checks(b, out)
        return b
    write_results(b, out, time.perf_counter() - b.start)
    if recipe is not None:
        write_headline(Path(args.headline), recipe, entry(b))
    return b


def main(argv: list[str]) -> None:
    bench(parse_args(argv))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
