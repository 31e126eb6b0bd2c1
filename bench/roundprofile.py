"""Where a decoding round's time goes: per-phase milliseconds from the engine's round records and a
torch.profiler table of the host's work, for the target alone and the n-gram arm (one GPU).

python -m bench.roundprofile [target=smollm2-135m-instruct] [n=6] [max_new_tokens=256] [dtype=bf16] [out=DIR]

Per arm: the engine decodes the built-in prompts (bench/fastpath.py's) once untimed, once timed (round
records: draft, verify, bandit, host), once under torch.profiler (CPU and CUDA activity; the table
sorts host operators by their own CPU time). Writes roundprofile.json and roundprofile.md (with the
profiler tables) under out=DIR.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.fastpath import BUILTIN_PROMPTS
from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm
from metasd_train.cli.args import parse
from metasd_train.data.prompts import chat_ids
from metasd_train.decoding.arms import NgramArm, NoDraftArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.records import round_breakdown
from metasd_train.errors import one_line_errors
from metasd_train.models import load_model
from metasd_train.models.tokenizers import eos_ids

ARMS = {"target_alone": lambda v: NoDraftArm("target_only", v), "ngram": lambda v: NgramArm("ngram", v, gamma=4)}


@dataclass
class ProfileArgs:
    target: str = "smollm2-135m-instruct"
    n: int = 6
    max_new_tokens: int = 256
    dtype: str = "bf16"
    max_len: int = 2048
    rows: int = 25  # profiler table rows
    device: str = "cuda"
    out: str = "roundprofile"


def decode(engine: SpecEngine, prompts: list[list[int]], n: int) -> list:
    chooser = BanditChooser(FixedArm(1, 0))
    return [r for p in prompts for r in engine.generate(p, n, chooser).rounds]


def profile_arm(name: str, target, prompts, eos, a: ProfileArgs) -> tuple[dict, str]:
    from torch.profiler import ProfilerActivity, profile

    engine = SpecEngine(target, [ARMS[name](target.config.vocab_size)], eos_ids=eos, fast=True, max_len=a.max_len)
    engine.warmup()
    decode(engine, prompts, a.max_new_tokens)
    rounds = decode(engine, prompts, a.max_new_tokens)
    ms = {k: 1e3 * v / len(rounds) for k, v in round_breakdown(rounds).items()}
    tokens = sum(r.accepted + 1 for r in rounds)
    row = {"rounds": len(rounds), "tau": tokens / len(rounds), "tokens_per_s": tokens / sum(r.t_round for r in rounds),
           "ms_per_round": ms}  # fmt: skip
    cuda = [ProfilerActivity.CUDA] if engine.device.type == "cuda" else []
    with profile(activities=[ProfilerActivity.CPU, *cuda]) as prof:
        decode(engine, prompts[:1], a.max_new_tokens)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows)
    return row, table


def main(argv: list[str]) -> None:
    a = parse(ProfileArgs, argv)
    loaded = load_model({"name": a.target, "dtype": a.dtype}, a.device)
    target, tok = loaded.model, loaded.tokenizer
    prompts = [chat_ids(tok, q) for q in BUILTIN_PROMPTS[: a.n]]
    eos = eos_ids(target, tok)
    out, results, tables = Path(a.out), {}, []
    for name in ARMS:
        results[name], table = profile_arm(name, target, prompts, eos, a)
        tables += [f"## {name}", "", "```", table, "```", ""]
        print(name, json.dumps(results[name]), table, sep="\n", flush=True)  # as it comes: a cut run keeps it
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name() if target.device.type == "cuda" else "cpu"
    meta = {"card": card, "target": a.target, "dtype": a.dtype, "torch": torch.__version__}
    (out / "roundprofile.json").write_text(json.dumps({"meta": meta, "arms": results}, indent=1))
    lines = [f"# Round profile: {a.target}, {meta['card']}, {a.dtype}", "", "| arm | τ | tok/s | " +
             " | ".join(f"{k} ms" for k in ("draft", "verify", "bandit", "host", "round")) + " |", "|---|" + "---|" * 7]  # fmt: skip
    for name, r in results.items():
        ms = r["ms_per_round"]
        lines.append(f"| {name} | {r['tau']:.2f} | {r['tokens_per_s']:.1f} | " +
                     " | ".join(f"{ms[k]:.3f}" for k in ("draft", "verify", "bandit", "host", "round")) + " |")  # fmt: skip
    (out / "roundprofile.md").write_text("\n".join(lines + [""] + tables))
    print("\n".join(lines + [""] + tables), flush=True)


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
