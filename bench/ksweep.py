"""τ and speed against the draft-vocabulary size K of a trained head, without retraining (FR-Spec style).

python -m bench.ksweep run=RUN_DIR prompts=FILE.jsonl [ks=2048,4096,...] [arm=generalist]
                       [max_new_tokens=256] [per_category=100] [out=DIR] [device=auto] [fast=true]

For each K the run's head `arm` is restricted to the K most frequent ids of its draft vocabulary
(models/head_restrict.py, counted over the run's training answers as the vocabulary was) and decodes
every prompt greedily on its own: a fixed-arm engine on the export's decode settings (fast path,
graphs captured and warmed before timing). Per K: τ, tokens/s, and on CUDA the chained head step
(bench/headstep.py) against the target step. The target alone is the reference row. Writes
ksweep.json, ksweep.md and ksweep.png (when matplotlib is installed) under out=DIR (default
<run>/bench).
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.fastpath import replay_ms
from bench.harness import Bench, card_name, engine_stats
from bench.headstep import chained_step_ms
from metasd_train.bandit.chooser import chooser_for
from metasd_train.cli.args import check_ranges, parse
from metasd_train.decoding.assemble import make_engine
from metasd_train.decoding.head_arm import HeadArm
from metasd_train.errors import UserError, one_line_errors
from metasd_train.export.ensemble import find_export
from metasd_train.models.head_restrict import restrict_head

ALONE = "target alone"


@dataclass
class KSweepArgs:
    run: str = ""  # a run directory (its export/ and data/ are read)
    prompts: str = ""  # question.jsonl: question_id, category, turns[] (first turns are decoded)
    ks: str = ""  # draft-vocabulary sizes, each at most the head's own ("": its own and its halvings down to 2,048)
    arm: str = "generalist"  # the head arm of the export to restrict
    max_new_tokens: int = 256
    per_category: int = 100  # prompts taken per category, in file order
    out: str = ""  # results folder (default <run>/bench)
    device: str = "auto"
    fast: bool = True  # static caches (+ CUDA graphs on a GPU)
    budget_s: float = 0.0  # skip sizes that would start after this many seconds (0 = no limit)


def parse_args(argv: list[str]) -> KSweepArgs:
    args = parse(KSweepArgs, argv, required=("run", "prompts"))
    check_ranges(args, [("max_new_tokens", lambda v: v >= 1, ">= 1"), ("per_category", lambda v: v >= 1, ">= 1")])
    sizes(args.ks)  # fails here, before any model loads
    return args


def sizes(ks: str, full: int | None = None) -> list[int]:
    """The sizes `ks` names, or with ks="" the head's own size `full` and its halvings down to 2,048."""
    if not ks:
        return sorted({full >> i for i in range(8) if full >> i >= min(2048, full)}) if full else []
    try:
        out = sorted({int(k) for k in ks.split(",")})
    except ValueError:
        raise UserError(f"ks={ks!r}: pass comma-separated integers, e.g. ks=2048,4096,8192") from None
    if not out or out[0] < 1:
        raise UserError(f"ks={ks!r}: every size must be >= 1")
    return out


def answer_counts(run: str, vocab_size: int) -> torch.Tensor:
    """Token counts of the run's training answers: what its heads' draft vocabularies were built from."""
    import datasets

    from metasd_train.models.drafters import answer_counts as counts_of
    from metasd_train.pipeline.run_dir import RunDir

    examples = datasets.load_from_disk(str(RunDir(find_export(run).parent).require("data") / "examples"))
    return counts_of(examples, vocab_size)


def the_head(b: Bench, name: str, ks: str) -> tuple[HeadArm, list[int]]:
    """The head arm `name` and the sizes to sweep it over."""
    heads = {a.name: a for a in b.ens.arms if a.kind == "head"}
    if name not in heads:
        raise UserError(f"arm={name!r} is not a head arm of this export; choose one of: {', '.join(heads) or 'none'}")
    full = heads[name].head.config.draft_vocab_size
    out = sizes(ks, full)
    if max(out) > full:
        raise UserError(f"ks={max(out)} exceeds the head's draft vocabulary ({full}); choose sizes up to {full}")
    return heads[name], out


def k_row(b: Bench, arm: HeadArm, counts: torch.Tensor, k: int) -> dict | None:
    """Decode every prompt with `arm`'s head restricted to K ids; τ, tokens/s, head and target step."""
    small = restrict_head(arm.head, counts, k, always=b.eos)
    engine = make_engine(b.model, b.ens.target.tokenizer, [HeadArm(f"{arm.name}_K{k}", small, arm.embed,
                         arm.vocab_size, arm.gamma)], b.decode_cfg())  # fmt: skip
    engine.warmup()
    chooser = chooser_for(None, fixed=0)[0]
    engine.generate(b.prompts[0].ids, min(8, b.n), chooser)
    result = b.timed(f"K={k}", lambda: engine_stats(engine, chooser, b.prompts, b.n))
    rt, graphs = engine.runtimes[0], engine.runtimes[0].graphs
    return result and {
        "k": k,
        "tau": result.summary["all"]["tau"],
        "tokens_per_s": result.summary["all"]["tokens_per_s"],
        "head_step_ms": chained_step_ms(rt, arm.gamma) if graphs else None,
        "target_step_ms": replay_ms(engine.target, 1) if graphs else None,
        "head_fallback": rt.fallback,
    }


def rows_for(b: Bench, arm: HeadArm, counts: torch.Tensor, ks: list[int]) -> list[dict]:
    """k_row per size, each engine's caches and graphs freed before the next is built."""
    rows = []
    for k in ks:
        rows.append(k_row(b, arm, counts, k))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [r for r in rows if r is not None]


def ksweep(args: KSweepArgs) -> dict:
    b = Bench(args).load()
    arm, ks = the_head(b, args.arm, args.ks)
    counts = answer_counts(args.run, b.model.config.vocab_size)
    rows = rows_for(b, arm, counts, ks)
    alone = b.timed(ALONE, lambda: engine_stats(b.engine(alone=True), chooser_for(None, fixed=0)[0], b.prompts, b.n))
    alone_tok_s = alone.summary["all"]["tokens_per_s"] if alone else None
    for r in rows:
        r["speedup_over_target_alone"] = r["tokens_per_s"] / alone_tok_s if alone_tok_s else None
        r["head_over_target_step"] = r["head_step_ms"] / r["target_step_ms"] if r["head_step_ms"] else None
    meta = {"card": card_name(), "torch": torch.__version__, **asdict(args), "prompts_used": len(b.prompts),
            "gamma": arm.gamma, "full_k": arm.head.config.draft_vocab_size, "notes": b.notes}  # fmt: skip
    return {"meta": meta, "rows": rows, "target_alone_tokens_per_s": alone_tok_s}


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# τ and speed vs draft vocabulary K: {m['arm']} of {m['run']} on {m['card']}", ""]
    lines += [f"{m['prompts_used']} prompts, {m['max_new_tokens']} new tokens, greedy, γ = {m['gamma']}; "
              f"the exported head has K = {m['full_k']} (distill/draft_vocab.json says whether training cut it).", ""]  # fmt: skip
    lines += ["| K | τ | tokens/s | × target alone | head step ms | / target step |", "|---|---|---|---|---|---|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in report["rows"]:
        cells = [fmt(r["tau"], ".3f"), fmt(r["tokens_per_s"], ".1f"), fmt(r["speedup_over_target_alone"], ".2f")]
        cells += [fmt(r["head_step_ms"], ".4f"), fmt(r["head_over_target_step"], ".1%")]
        lines.append(f"| {r['k']} | " + " | ".join(cells) + " |")
    lines += ["", f"Target alone: {fmt(report['target_alone_tokens_per_s'], '.1f')} tokens/s.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> str | None:
    """τ and tokens/s against K; a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "ksweep.png skipped: matplotlib is not installed"
    rows = report["rows"]
    fig, (tau, speed) = plt.subplots(1, 2, figsize=(9, 3.5))
    ks = [r["k"] for r in rows]
    tau.plot(ks, [r["tau"] for r in rows], "o-")
    speed.plot(ks, [r["tokens_per_s"] for r in rows], "o-", label="head, K ids")
    if report["target_alone_tokens_per_s"]:
        speed.axhline(report["target_alone_tokens_per_s"], color="grey", ls="--", label="target alone")
    for ax, name in ((tau, "τ (tokens per round)"), (speed, "tokens/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("draft vocabulary K")
        ax.set_ylabel(name)
    speed.legend()
    fig.suptitle(f"{report['meta']['arm']} on {report['meta']['card']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    report = ksweep(args)
    out = Path(args.out) if args.out else find_export(args.run).parent / "bench"
    out.mkdir(parents=True, exist_ok=True)
    if note := plot(report, out / "ksweep.png"):
        report["meta"]["notes"]["plot"] = note
    (out / "ksweep.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "ksweep.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
