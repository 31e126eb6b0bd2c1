"""What `python decode.py` does: load an exported ensemble and decode prompts with the bandit."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from metasd_train.atomic import write_text
from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.persist import load_bandit
from metasd_train.bandit.policies import make_policy
from metasd_train.data.prompts import chat_ids
from metasd_train.errors import UserError
from metasd_train.export.fingerprint import fingerprint
from metasd_train.models import load_model, pick_device
from metasd_train.pipeline import plots
from metasd_train.pipeline.ensemble import build_arms, make_engine


@dataclass
class DecodeArgs:
    run: str = "???"  # a run directory (its export/ is loaded) or an export folder
    prompt: str | None = None
    prompts: str | None = None  # question.jsonl: question_id, category, turns[]
    out: str | None = None  # answers jsonl (default <run>/decode/<prompts stem>.answers.jsonl)
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    policy: str | None = None  # override the exported policy (fresh, not warm-started)
    arm: str | None = None  # decode with this one drafter only
    feedback: str | None = None  # bandit | full
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    fast: bool | None = None  # static caches + CUDA graphs on a GPU (default on)
    max_len: int | None = None  # positions in the fast path's caches (default 2048)
    baseline: bool = True  # also time the target alone (HF generate) on the same prompts
    quiet: bool = False


def parse(argv: list[str]) -> DecodeArgs:
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.structured(DecodeArgs)
    try:
        args = OmegaConf.merge(base, OmegaConf.from_dotlist(argv))
        OmegaConf.select(args, "run", throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        raise UserError(
            f"bad decode option {key!r}; valid: {', '.join(f'{k}=' for k in base.keys())} (run=... is required)"
        ) from None
    out = DecodeArgs(**OmegaConf.to_container(args))
    if any(a in ("prompt=", 'prompt=""', "prompt=''") for a in argv):
        out.prompt = ""  # OmegaConf reads an empty value as null; an empty prompt is an error, not "no prompt"
    checks = [
        ("temperature", out.temperature, lambda v: v >= 0, ">= 0 (0 = greedy)"),
        ("top_p", out.top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("top_k", out.top_k, lambda v: v >= 0, ">= 0 (0 = off)"),
        ("max_new_tokens", out.max_new_tokens, lambda v: v >= 1, ">= 1"),
        ("max_len", out.max_len, lambda v: v >= 2, ">= 2"),
    ]
    for key, value, ok, want in checks:
        if value is not None and not ok(value):
            raise UserError(f"{key}={value} is out of range: it must be {want}")
    return out


def export_dir(run: str) -> Path:
    path = Path(run)
    for cand in (path / "export", path):
        if (cand / "ensemble.json").is_file():
            return cand
    raise UserError(
        f"{run} holds no exported ensemble (export/ensemble.json); finish the run: python train.py run_dir={run} ..."
    )


def load_ensemble(args: DecodeArgs):
    folder = export_dir(args.run)
    manifest = json.loads((folder / "ensemble.json").read_text())
    device = pick_device(args.device)
    target = load_model({**manifest["target"], "dtype": args.dtype}, device)
    if fingerprint(target.model) != manifest["target"]["fingerprint"]:
        raise UserError(
            f"the target {manifest['target']['name']!r} found here is not the one {folder} was trained for "
            "(fingerprint mismatch); install the same target or retrain"
        )
    specs = [{**d, "path": str(folder / d["path"])} for d in manifest["drafters"]]
    if args.arm:
        specs = [s for s in specs if s["name"] == args.arm]
    ngram = manifest.get("ngram") and (not args.arm or args.arm == "ngram")
    if args.arm and not specs and not ngram:
        raise UserError(
            f"arm={args.arm!r} is not in this ensemble; choose one of: {', '.join(d['name'] for d in manifest['drafters'])}, ngram"
        )
    arms = build_arms(
        specs, target.model, target.tokenizer, 4, bool(ngram), (manifest.get("ngram") or {}).get("gamma", 4)
    )
    return manifest, folder, target, arms


def make_chooser(args: DecodeArgs, folder: Path, manifest: dict, arms) -> tuple[BanditChooser, dict]:
    """The exported (or overridden) policy as the engine's chooser, and the bandit config it was fitted with."""
    policy, feat, meta = load_bandit(folder / manifest["bandit"])
    cfg = meta["config"]
    if args.arm or args.policy or meta["arms"] != [a.name for a in arms]:
        name = "fixed" if args.arm else (args.policy or meta["policy"])
        policy = make_policy(name, len(arms), cfg, dim=feat.dim if feat else 16)
    return BanditChooser(policy, cfg.get("reward", "divergence"), feat, bool(cfg.get("reset_per_request", False))), cfg


def read_questions(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompts file not found: {path}; pass a question.jsonl (question_id, category, turns[])")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i} is not valid JSON ({e.msg}); one question object per line") from None
        if (
            not isinstance(q.get("turns"), list)
            or not q["turns"]
            or not all(isinstance(t, str) and t.strip() for t in q["turns"])
        ):
            raise UserError(f"{path}:{i} needs a non-empty 'turns' list of non-empty strings")
        out.append(
            {"question_id": q.get("question_id", i), "category": q.get("category", "default"), "turns": q["turns"]}
        )
    if not out:
        raise UserError(f"{path} holds no questions")
    return out


def _baseline(target, ids: list[int], n: int, params) -> tuple[int, float]:
    """Tokens and seconds of the target alone through HF generate (same sampling settings)."""
    x = torch.tensor([ids], device=target.device)
    kw = (
        {"do_sample": False}
        if params.greedy
        else {
            "do_sample": True,
            "temperature": params.temperature,
            "top_k": params.top_k or None,
            "top_p": params.top_p,
        }
    )
    sync = torch.cuda.synchronize if target.device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    out = target.generate(x, max_new_tokens=n, pad_token_id=target.generation_config.eos_token_id, **kw)
    sync()
    return out.shape[1] - len(ids), time.perf_counter() - t


class Streamer:
    def __init__(self, tokenizer, console: Console):
        self.tok, self.console, self.ids, self.shown = tokenizer, console, [], ""

    def __call__(self, new: list[int]) -> None:
        self.ids.extend(new)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        self.console.print(text[len(self.shown) :], end="", soft_wrap=True, highlight=False, markup=False)
        self.shown = text


def decode(args: DecodeArgs, console: Console | None = None) -> dict:
    """Decode one prompt (streamed) or a question file; returns the per-category summary."""
    console = console or Console(quiet=args.quiet, width=max(Console().width, 130))
    if args.prompt is None and args.prompts is None:
        raise UserError('nothing to decode: pass prompt="..." or prompts=FILE.jsonl')
    if args.prompt is not None and not args.prompt.strip():
        raise UserError('the prompt is empty: pass some text in prompt="..."')
    manifest, folder, target, arms = load_ensemble(args)
    dcfg = OmegaConf.create(manifest["decode"])
    for key in ("temperature", "top_p", "top_k", "max_new_tokens", "fast", "max_len"):
        if getattr(args, key) is not None:
            dcfg[key] = getattr(args, key)
    chooser, bandit_cfg = make_chooser(args, folder, manifest, arms)
    feedback = args.feedback or bandit_cfg.get("feedback", "bandit")
    engine = make_engine(target.model, target.tokenizer, arms, dcfg, full_feedback=feedback == "full")
    engine.check_request(1, int(dcfg.max_new_tokens))
    if engine.fast:
        console.print(f"fast path: static caches, CUDA graphs captured in {engine.warmup():.1f}s")
    torch.manual_seed(args.seed)
    questions = (
        [{"question_id": 0, "category": "prompt", "turns": [args.prompt]}]
        if args.prompt is not None
        else read_questions(args.prompts)
    )
    records, chosen = [], []
    for q in questions:
        messages, answers, stats = [], [], []
        for turn in q["turns"]:
            messages.append({"role": "user", "content": turn})
            ids = chat_ids(target.tokenizer, messages)
            streamer = Streamer(target.tokenizer, console) if args.prompt is not None else None
            gen = engine.generate(ids, int(dcfg.max_new_tokens), chooser, on_tokens=streamer)
            text = target.tokenizer.decode(gen.tokens, skip_special_tokens=True)
            messages.append({"role": "assistant", "content": text})
            s = gen.summary()
            if args.baseline:
                n, secs = _baseline(target.model, ids, int(dcfg.max_new_tokens), engine.params)
                s["baseline_tokens_per_s"] = n / secs
                s["speedup"] = s["tokens_per_s"] / s["baseline_tokens_per_s"]
            answers.append(text)
            stats.append(s)
            chosen.extend(r.arm for r in gen.rounds)
        records.append({**q, "answers": answers, "stats": stats})
        if args.prompt is not None:
            console.print()
    summary = summarize(records)
    console.print(summary_table(summary, [a.name for a in arms]))
    if args.prompts is not None:
        out = Path(args.out or folder.parent / "decode" / Path(args.prompts).with_suffix(".answers.jsonl").name)
        write_text(out, "".join(json.dumps(r) + "\n" for r in records))
        plots.arm_timeline(
            chosen,
            [a.name for a in arms],
            "drafter chosen per round (all requests in order)",
            out.with_suffix(".arms.png"),
        )
        console.print(f"answers: {out}  arm plot: {out.with_suffix('.arms.png')}")
    return summary


def summarize(records: list[dict]) -> dict:
    """Per category (and 'all'): requests, tokens, τ, tokens/s, baseline tokens/s, speed-up, arm shares."""
    groups = defaultdict(list)
    for r in records:
        for s in r["stats"]:
            groups[r["category"]].append(s)
            groups["all"].append(s)
    out = {}
    for cat, ss in groups.items():
        tokens, secs, rounds = (
            sum(s["new_tokens"] for s in ss),
            sum(s["seconds"] for s in ss),
            sum(s["rounds"] for s in ss),
        )
        row = {
            "requests": len(ss),
            "new_tokens": tokens,
            "tau": tokens / max(rounds, 1),
            "tokens_per_s": tokens / max(secs, 1e-9),
        }
        if all("baseline_tokens_per_s" in s for s in ss):
            base_secs = sum(s["new_tokens"] / s["baseline_tokens_per_s"] for s in ss)
            row["baseline_tokens_per_s"] = tokens / max(base_secs, 1e-9)
            row["speedup"] = row["tokens_per_s"] / row["baseline_tokens_per_s"]
        shares = defaultdict(float)
        for s in ss:
            for arm, v in s["arm_share"].items():
                shares[arm] += v * s["rounds"]
        row["arm_share"] = {a: v / max(rounds, 1) for a, v in shares.items()}
        out[cat] = row
    return {k: out[k] for k in sorted(out, key=lambda c: (c == "all", c))}


def summary_table(summary: dict, arm_names: list[str]) -> Table:
    table = Table(
        "category",
        "requests",
        "tokens",
        "τ",
        "tok/s",
        "target tok/s",
        "speed-up",
        "arm shares",
        title="decode summary (τ = mean tokens per round)",
    )
    for cat, r in summary.items():
        shares = " ".join(f"{a}:{r['arm_share'].get(a, 0):.0%}" for a in arm_names if r["arm_share"].get(a, 0) > 0)
        table.add_row(
            cat,
            str(r["requests"]),
            str(r["new_tokens"]),
            f"{r['tau']:.2f}",
            f"{r['tokens_per_s']:.1f}",
            f"{r.get('baseline_tokens_per_s', float('nan')):.1f}",
            f"{r.get('speedup', float('nan')):.2f}x",
            shares,
        )
    return table
