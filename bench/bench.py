"""Benchmark: our engine and its baselines on the same prompts, in one run on one card.

python bench/bench.py run=RUN_DIR prompts=question.jsonl [per_category=2] [max_new_tokens=128] [out=DIR]
                      [compile=true] [assisted=generalist] [sampled=true] [budget_s=480] [commit=SHA]
                      [check_eager=2] [check_fp32=64] [timed=true]

Configurations: (1) HF generate, eager; (2) HF generate with a static cache + torch.compile (the
fastest autoregressive baseline we can run); (3) HF assisted generation with a drafter; (4) our
engine with each fixed arm; (5) MetaSD policies (UCB on block divergence, EXP3, warm-started
contextual LinUCB, LinUCB with full-information feedback); (6) the per-category oracle arm (best
fixed arm per category, picked from (4) in hindsight). Greedy outputs are checked against (1).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm, make_policy
from metasd_train.data.prompts import chat_ids
from metasd_train.decoding.arms import NoDraftArm
from metasd_train.pipeline import plots
from metasd_train.pipeline.decoding import DecodeArgs, load_ensemble, make_chooser, read_questions
from metasd_train.pipeline.ensemble import eos_ids, make_engine

ARGS = {
    "run": "",
    "prompts": "",
    "per_category": 2,
    "max_new_tokens": 128,
    "out": "bench/results",
    "compile": True,
    "assisted": "generalist",
    "sampled": True,
    "budget_s": 480.0,
    "commit": "unknown",
    "device": "auto",
    "hf_per_category": 1,  # prompts per category for the slow HF eager and assisted baselines
    "hf_max": 0,  # at most this many prompts for them (0 = no cap)
    "fast": True,  # our engine on static caches + CUDA graphs
    "check_eager": 2,  # prompts on which our eager engine (first arm) is compared with the fast path, bf16 (0 = off)
    "check_fp32": 64,  # new tokens per prompt for the fp32 fast-path-vs-HF-greedy check on every prompt (0 = off)
    "timed": True,  # false: only the checks (writes checks.json), e.g. in a second device call
    "hf_sampled": True,  # HF eager sampling at T = 0.7 on the HF prompts
}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pick_prompts(path: str, per_category: int) -> list[dict]:
    taken = defaultdict(int)
    out = []
    for q in read_questions(path):
        if taken[q["category"]] < per_category:
            taken[q["category"]] += 1
            out.append(q)
    return out


def run_hf(target, prompts, n, eos, **kw) -> list[dict]:
    rows = []
    for ids, cat in prompts:
        x = torch.tensor([ids], device=target.device)
        sync()
        t = time.perf_counter()
        out = target.generate(x, max_new_tokens=n, eos_token_id=eos, pad_token_id=eos[0], **kw)
        sync()
        rows.append({"category": cat, "tokens": out[0, len(ids) :].tolist(), "seconds": time.perf_counter() - t})
    return rows


def run_engine(engine, chooser, prompts, n) -> list[dict]:
    rows = []
    for ids, cat in prompts:
        gen = engine.generate(ids, n, chooser)
        s = gen.summary()
        rows.append(
            {
                "category": cat,
                "tokens": gen.tokens,
                "seconds": gen.seconds,
                "rounds": len(gen.rounds),
                "arms": [r.arm_name for r in gen.rounds],
                "bandit_s": sum(r.t_bandit for r in gen.rounds),
                "draft_s": sum(r.t_draft for r in gen.rounds),
                "verify_s": sum(r.t_verify for r in gen.rounds),
                "catchup_s": sum(r.t_catchup for r in gen.rounds),
                "tau": s["tau"],
            }
        )
    return rows


def aggregate(rows: list[dict]) -> dict:
    out = {}
    groups = defaultdict(list)
    for r in rows:
        groups[r["category"]].append(r)
        groups["all"].append(r)
    for cat, rs in groups.items():
        tokens = sum(len(r["tokens"]) for r in rs)
        secs = sum(r["seconds"] for r in rs)
        row = {"tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs}
        if "rounds" in rs[0]:
            rounds = sum(r["rounds"] for r in rs)
            row["tau"] = tokens / rounds
            arms = defaultdict(int)
            for r in rs:
                for a in r["arms"]:
                    arms[a] += 1
            row["arm_share"] = {a: c / rounds for a, c in sorted(arms.items())}
            row["bandit_share"] = sum(r["bandit_s"] for r in rs) / secs
            row["time_split"] = {
                k: sum(r[f"{k}_s"] for r in rs) / secs for k in ("draft", "verify", "catchup", "bandit")
            }
        out[cat] = row
    return out


class Bench:
    """What every configuration shares: the loaded ensemble, the prompts, the greedy settings."""

    def __init__(self, args):
        self.args, self.start = args, time.perf_counter()
        self.dargs = DecodeArgs(run=args.run, device=args.device, baseline=False, quiet=True)
        self.manifest, self.folder, target, self.arms = load_ensemble(self.dargs)
        self.model, self.tok = target.model, target.tokenizer
        self.eos = eos_ids(self.model, self.tok)
        self.qs = pick_prompts(args.prompts, args.per_category)
        self.prompts = [(chat_ids(self.tok, q["turns"][0]), q["category"]) for q in self.qs]
        self.n = int(args.max_new_tokens)
        self.names = [a.name for a in self.arms]
        self.greedy = OmegaConf.create(
            {
                **self.manifest["decode"],
                "temperature": 0.0,
                "top_k": 0,
                "top_p": 1.0,
                "early_stop": 0.0,
                "fast": bool(args.fast),
            }
        )
        self.results, self.notes = {}, {}

    def timed(self, name, fn):
        if time.perf_counter() - self.start > self.args.budget_s:
            self.notes[name] = "skipped: over the time budget"
            print(f"skip {name}", flush=True)
            return None
        t = time.perf_counter()
        rows = fn()
        self.results[name] = {"rows": rows, "agg": aggregate(rows), "wall_s": time.perf_counter() - t}
        tps = self.results[name]["agg"]["all"]["tokens_per_s"]
        print(f"{name:<34} {tps:8.1f} tok/s  ({time.perf_counter() - t:.0f}s)", flush=True)
        return rows

    def chooser(self):
        return make_chooser(self.dargs, self.folder, self.manifest, self.arms)[0]

    def alone(self, cfg):
        return make_engine(self.model, self.tok, [NoDraftArm("target_only", self.model.config.vocab_size)], cfg)


def hf_autoregressive(b: Bench, hf_prompts) -> None:
    """(1) HF eager, (2) HF static cache + compile."""
    args, model, n, eos = b.args, b.model, b.n, b.eos
    run_hf(model, b.prompts[:1], 8, eos, do_sample=False)  # CUDA context and kernels warm
    b.timed(
        f"hf_generate_eager ({len(hf_prompts)} prompts)", lambda: run_hf(model, hf_prompts, n, eos, do_sample=False)
    )
    if args.compile:
        # every prompt once, untimed: a prompt length that needs another cache shape recompiles, and a
        # recompile inside the timed pass (seen on an H100: 14.7 tok/s on one category) is not the baseline
        t = time.perf_counter()
        run_hf(model, b.prompts, n, eos, do_sample=False, cache_implementation="static")
        b.notes["hf_static_compile_warmup_s"] = time.perf_counter() - t
        b.timed(
            "hf_generate_static_compile",
            lambda: run_hf(model, b.prompts, n, eos, do_sample=False, cache_implementation="static"),
        )


def hf_assisted(b: Bench, hf_prompts) -> None:
    """(3) HF assisted generation with each drafter named in `assisted`."""
    model, n, eos = b.model, b.n, b.eos
    for name in [s for s in str(b.args.assisted).split(",") if s in b.names]:
        arm = b.arms[b.names.index(name)]
        arm.model.generation_config.num_assistant_tokens = arm.gamma
        arm.model.generation_config.num_assistant_tokens_schedule = "constant"
        arm.model.generation_config.assistant_confidence_threshold = 0.0
        b.timed(
            f"hf_assisted:{name} ({len(hf_prompts)} prompts)",
            lambda d=arm.model: run_hf(model, hf_prompts, n, eos, do_sample=False, assistant_model=d),
        )


def engine_configs(b: Bench) -> None:
    """Our engine: target alone, (4) each fixed arm, (5) MetaSD policies, (6) the per-category oracle."""
    prompts, n, k = b.prompts, b.n, len(b.arms)
    t = time.perf_counter()
    engine = make_engine(b.model, b.tok, b.arms, b.greedy)
    b.notes["engine_start_s (build + graph capture)"] = time.perf_counter() - t + engine.warmup()
    alone = b.alone(b.greedy)
    alone.warmup()
    run_engine(engine, BanditChooser(FixedArm(k, 0)), prompts[:1], 16)  # first-call costs out of the timings
    b.timed("engine_target_only", lambda: run_engine(alone, BanditChooser(FixedArm(1, 0)), prompts, n))
    for i, name in enumerate(b.names):
        b.timed(f"engine_fixed:{name}", lambda i=i: run_engine(engine, BanditChooser(FixedArm(k, i)), prompts, n))
    bcfg = json.loads((b.folder / "bandit/bandit.json").read_text())["config"]
    # MetaSD's alignment feedback, then UCB on the cost-aware throughput reward (tokens per target-forward time)
    for pname, reward in (("ucb", "divergence"), ("exp3", "divergence"), ("ucb", "throughput")):
        b.timed(
            f"metasd:{pname}-{reward}",
            lambda p=pname, r=reward: run_engine(engine, BanditChooser(make_policy(p, k, bcfg), r), prompts, n),
        )
    b.timed("metasd:linucb-warm", lambda: run_engine(engine, b.chooser(), prompts, n))
    full = make_engine(b.model, b.tok, b.arms, b.greedy, full_feedback=True)
    full.warmup()
    b.timed("metasd:linucb-warm-full-info", lambda: run_engine(full, b.chooser(), prompts, n))
    fixed = {key: v for key, v in b.results.items() if key.startswith("engine_fixed:")}
    if len(fixed) == k:
        cats = {c for _, c in prompts}
        best = {cat: max(fixed, key=lambda key: fixed[key]["agg"][cat]["tokens_per_s"]) for cat in cats}
        b.notes.update({f"oracle_arm:{cat}": a for cat, a in best.items()})
        rows = [fixed[best[cat]]["rows"][i] for i, (_, cat) in enumerate(prompts)]  # prompt order, as the reference
        b.results["oracle_per_category"] = {"rows": rows, "agg": aggregate(rows), "wall_s": 0.0}


def sampled_configs(b: Bench, hf_prompts) -> None:
    """T = 0.7: HF eager sampling, the warm-started bandit, and our target alone."""
    n, eos = b.n, b.eos
    sampled = OmegaConf.create({**b.greedy, "temperature": 0.7})
    if hf_prompts:
        b.timed(
            f"sampled_T0.7:hf_generate_eager ({len(hf_prompts)} prompts)",
            lambda: run_hf(b.model, hf_prompts, n, eos, do_sample=True, temperature=0.7, top_k=None, top_p=1.0),
        )
    b.timed(
        "sampled_T0.7:metasd:linucb-warm",
        lambda: run_engine(make_engine(b.model, b.tok, b.arms, sampled), b.chooser(), b.prompts, n),
    )
    b.timed(
        "sampled_T0.7:engine_target_only",
        lambda: run_engine(b.alone(sampled), BanditChooser(FixedArm(1, 0)), b.prompts, n),
    )


def checks(b: Bench) -> dict:
    """Same tokens? bf16 fast path vs our eager engine (first arm), and fp32 fast path vs HF greedy."""
    out = {}
    if b.args.check_eager:
        prompts = b.prompts[: int(b.args.check_eager)]
        k = len(b.arms)
        fast = run_engine(make_engine(b.model, b.tok, b.arms, b.greedy), BanditChooser(FixedArm(k, 0)), prompts, b.n)
        eager_cfg = OmegaConf.create({**b.greedy, "fast": False})
        eager = run_engine(make_engine(b.model, b.tok, b.arms, eager_cfg), BanditChooser(FixedArm(k, 0)), prompts, b.n)
        same = sum(x["tokens"] == y["tokens"] for x, y in zip(fast, eager))
        dtype = str(b.model.dtype).removeprefix("torch.")
        out[f"{dtype}_fast_vs_eager_engine_same_tokens"] = f"{same}/{len(prompts)} ({b.names[0]} arm, {b.n} tokens)"
    if b.args.check_fp32:
        out["fp32_fast_path_vs_hf_greedy_same_tokens"] = check_fp32(
            b.dargs, b.folder, b.manifest, b.prompts, int(b.args.check_fp32)
        )
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str]) -> None:
    args = OmegaConf.merge(OmegaConf.create(ARGS), OmegaConf.from_dotlist(argv))
    b = Bench(args)
    hf_qs = pick_prompts(args.prompts, args.hf_per_category)
    hf_prompts = [(ids, c) for (ids, c), q in zip(b.prompts, b.qs) if q in hf_qs]
    hf_prompts = hf_prompts[: args.hf_max or None]
    if args.timed:
        hf_autoregressive(b, hf_prompts)
        engine_configs(b)
        hf_assisted(b, hf_prompts)
        if args.sampled:
            sampled_configs(b, hf_prompts if args.hf_sampled else [])
    b.notes.update(checks(b))
    if not args.timed:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "card": card_name(),
            "dtype": str(b.model.dtype),
            "commit": args.commit,
            "prompts": args.prompts,
            "per_category": args.per_category,
            "max_new_tokens": args.max_new_tokens,
        }
        (out / "checks.json").write_text(json.dumps({"meta": meta, "checks": b.notes}, indent=1))
        return
    ref = b.results["hf_generate_static_compile"]["rows"] if args.compile else b.results["engine_target_only"]["rows"]
    mismatches = {
        k: sum(x["tokens"] != y["tokens"] for x, y in zip(v["rows"], ref))
        for k, v in b.results.items()
        if not k.startswith("hf_") and "sampled" not in k
    }
    report(args, b.results, b.notes, mismatches, b.manifest, b.model, time.perf_counter() - b.start)


def card_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"


def check_fp32(dargs, folder, manifest, prompts, n: int) -> str:
    """In fp32 the fast path with a switching bandit must give HF's greedy tokens exactly."""
    import dataclasses

    _, _, target, arms = load_ensemble(dataclasses.replace(dargs, dtype="fp32"))
    model, tok = target.model, target.tokenizer
    eos = eos_ids(model, tok)
    cfg = OmegaConf.create({**manifest["decode"], "temperature": 0.0, "top_k": 0, "top_p": 1.0, "early_stop": 0.0})
    engine = make_engine(model, tok, arms, cfg)
    ours = run_engine(engine, make_chooser(dargs, folder, manifest, arms)[0], prompts, n)
    ref = run_hf(model, prompts, n, eos, do_sample=False)
    return f"{sum(a['tokens'] == b['tokens'] for a, b in zip(ours, ref))}/{len(ref)} (fast={engine.fast}, {n} tokens)"


def report(args, results, notes, mismatches, manifest, model, total_s) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = card_name()
    best_ar = max(
        (k for k in results if k.startswith("hf_generate") or k == "engine_target_only"),
        key=lambda k: results[k]["agg"]["all"]["tokens_per_s"],
    )
    meta = {
        "card": card,
        "dtype": str(model.dtype),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": sys.version.split()[0],
        "target": manifest["target"]["name"],
        "prompts": args.prompts,
        "per_category": args.per_category,
        "max_new_tokens": args.max_new_tokens,
        "commit": args.commit,
        "baseline_2": best_ar,
        "total_s": total_s,
        "notes": notes,
        "greedy_mismatches_vs_hf_eager": mismatches,
    }
    base = results[best_ar]["agg"]["all"]["tokens_per_s"]
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": {k: v["agg"] for k, v in results.items()}}, indent=1)
    )
    cats = sorted(c for c in results["engine_target_only"]["agg"] if c != "all") + ["all"]
    lines = [
        f"# Benchmark: {manifest['target']['name']} on {card}",
        "",
        f"dtype {model.dtype}, torch {meta['torch']}, transformers {meta['transformers']}, greedy unless marked, "
        f"{args.max_new_tokens} new tokens, {args.per_category} prompts per category from `{args.prompts}`, commit {args.commit}.",
        f"Speed-up is against ({best_ar}), the fastest autoregressive baseline in this run. "
        f"Greedy outputs differing from the reference ({'HF static+compile' if args.compile else 'our target alone'}, "
        f"same dtype) per config: {mismatches}. HF eager/assisted rows ran on the prompts their names count.",
        "",
        "| config | " + " | ".join(f"{c} tok/s" for c in cats) + " | speed-up | τ | bandit share |",
        "|---|" + "---|" * (len(cats) + 3),
    ]
    for k, v in results.items():
        a = v["agg"]
        lines.append(
            f"| {k} | "
            + " | ".join(f"{a[c]['tokens_per_s']:.1f}" if c in a else "-" for c in cats)
            + f" | {a['all']['tokens_per_s'] / base:.2f}x | {a['all'].get('tau', float('nan')):.2f} | "
            + (f"{a['all']['bandit_share']:.2%}" if "bandit_share" in a["all"] else "-")
            + " |"
        )
    lines += ["", "Notes: " + json.dumps(notes)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plots.bars(
        ["all"],
        {k: [v["agg"]["all"]["tokens_per_s"]] for k, v in results.items()},
        f"tokens/s on {card}",
        "tokens/s",
        out / "tokens_per_s.png",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
