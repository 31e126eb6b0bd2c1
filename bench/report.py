"""What a bench run leaves in `out`: results.json, results.md, tokens_per_s.png (checks.json for a
checks-only run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from bench.configs import HF_COMPILE, TARGET_ALONE, greedy, ours, shipped_row
from bench.harness import Bench, card_name
from metasd_train.atomic import write_json, write_text
from metasd_train.pipeline import plots


def baseline(b: Bench) -> str:
    """The row speed-ups are against: HF static+compile, else our target alone."""
    return HF_COMPILE if HF_COMPILE in b.results else TARGET_ALONE


def mismatches(b: Bench) -> dict[str, int]:
    """Per greedy configuration of ours: prompts whose tokens differ from the baseline row's."""
    ref = {s["prompt"]: s["tokens"] for s in b.results[baseline(b)].stats}
    return {
        name: sum(s["tokens"] != ref[s["prompt"]] for s in r.stats)
        for name, r in b.results.items()
        if greedy(name) and ours(name)
    }


def meta(b: Bench, total_s: float) -> dict:
    a = b.args
    return {
        "card": card_name(),
        "dtype": str(b.model.dtype),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": sys.version.split()[0],
        "target": b.ens.manifest["target"]["name"],
        "commit": a.commit,
        "prompts": a.prompts,
        "n_prompts": len(b.prompts),
        "per_category": a.per_category,
        "max_new_tokens": a.max_new_tokens,
        "baseline": baseline(b),
        "shipped": shipped_row(b),
        "startup": b.startup | {"engines": b.builds, "warmup_by_cache": b.warmups},
        "total_s": total_s,
        "notes": b.notes,
        "greedy_mismatches_vs_baseline": mismatches(b) if b.results else {},
    }


def rounded(d: dict) -> dict:
    return {k: rounded(v) if isinstance(v, dict) else round(v, 2) for k, v in d.items()}


def label(b: Bench, name: str) -> str:
    return f"{name} (shipped)" if name == shipped_row(b) else name


def table(b: Bench) -> list[str]:
    cats = [c for c in b.results[baseline(b)].summary if c != "all"] + ["all"]
    base = b.tok_s(baseline(b))
    lines = [
        "| config | " + " | ".join(f"{c} tok/s" for c in cats) + f" | vs {baseline(b)} | τ | bandit share |",
        "|---|" + "---|" * (len(cats) + 3),
    ]
    for name, r in b.results.items():
        row = r.summary
        cells = [f"{row[c]['tokens_per_s']:.1f}" if c in row else "-" for c in cats]
        bandit = f"{row['all']['bandit_share']:.2%}" if row["all"]["arm_share"] else "-"
        speed = f"{row['all']['tokens_per_s'] / base:.2f}x"
        lines.append(
            f"| {label(b, name)} | " + " | ".join(cells) + f" | {speed} | {row['all']['tau']:.2f} | {bandit} |"
        )
    return lines


def breakdown(b: Bench) -> list[str]:
    """Where a round's time goes, per configuration (all prompts): milliseconds per round by phase."""
    rows = [(n, r.summary["all"]["round_ms"]) for n, r in b.results.items() if "round_ms" in r.summary["all"]]
    if not rows:
        return []
    phases = ("draft", "verify", "idle", "bandit", "host", "round")
    lines = [
        "",
        "Where a round's time goes (ms per round, all prompts; draft and verify timed on the device with CUDA "
        "events, host = the rest of the wall time: commit, bookkeeping, launches the device waited for):",
        "",
        "| config | " + " | ".join(phases) + " | τ |",
        "|---|" + "---|" * (len(phases) + 1),
    ]
    for name, ms in rows:
        tau = b.results[name].summary["all"]["tau"]
        lines.append(f"| {label(b, name)} | " + " | ".join(f"{ms[p]:.3f}" for p in phases) + f" | {tau:.2f} |")
    return lines


def markdown(b: Bench, m: dict) -> str:
    a = b.args
    head = [
        f"# Benchmark: {m['target']} on {m['card']}",
        "",
        f"dtype {m['dtype']}, torch {m['torch']}, transformers {m['transformers']}, greedy unless marked, "
        f"{a.max_new_tokens} new tokens, {len(b.prompts)} prompts ({a.per_category} per category) from "
        f"`{a.prompts}`, commit {a.commit}. Speed-ups are against {m['baseline']}; HF eager/assisted rows "
        "ran on the prompts their names count. Engines were built and warmed before their timed pass.",
        f"Start-up seconds: {json.dumps(rounded(m['startup']))}.",
        f"Greedy outputs differing from {m['baseline']} (same dtype): {json.dumps(m['greedy_mismatches_vs_baseline'])}.",
        "",
    ]
    return "\n".join(head + table(b) + breakdown(b) + ["", "Notes: " + json.dumps(b.notes)]) + "\n"


def write_results(b: Bench, out: Path, total_s: float) -> dict:
    m = meta(b, total_s)
    write_json(out / "results.json", {"meta": m, "results": {k: r.summary for k, r in b.results.items()}})
    text = markdown(b, m)
    write_text(out / "results.md", text)
    series = {label(b, k): [r.summary["all"]["tokens_per_s"]] for k, r in b.results.items()}
    plots.bars(["all"], series, f"tokens/s on {m['card']}", "tokens/s", out / "tokens_per_s.png")
    print(text, flush=True)
    return m


def write_checks(b: Bench, out: Path) -> None:
    a = b.args
    m = {"card": card_name(), "dtype": str(b.model.dtype), "commit": a.commit, "prompts": a.prompts}
    write_json(out / "checks.json", {"meta": m | {"n_prompts": len(b.prompts)}, "checks": b.notes})
