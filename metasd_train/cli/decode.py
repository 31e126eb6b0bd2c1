"""What `python decode.py` does: load an exported ensemble, decode prompts with the bandit choosing
arms, compare with the fastest autoregressive path on the same prompts, write the answers."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from metasd_train.bandit.chooser import chooser_for
from metasd_train.cli.args import check_ranges, parse
from metasd_train.data.prompts import chat_ids, read_questions
from metasd_train.decoding.arms import NoDraftArm
from metasd_train.decoding.assemble import make_engine
from metasd_train.decoding.hf_generate import hf_generate
from metasd_train.decoding.records import summarize
from metasd_train.errors import UserError
from metasd_train.export.ensemble import find_export, load_ensemble
from metasd_train.models.loading import check_dtype, cpu_multiplies_bf16
from metasd_train.models.tokenizers import eos_ids
from metasd_train.pipeline import plots


@dataclass
class DecodeArgs:
    run: str = ""  # a run directory (its export/ is loaded) or an export folder
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
    sleeping: bool | None = None  # override bandit.sleeping: arms with nothing to propose sit the round out
    device: str = "auto"
    dtype: str | None = None  # default: the export's decode.dtype (auto: bf16 on a GPU and on a CPU with AMX)
    seed: int = 0
    fast: bool | None = None  # static caches and our forward (+ CUDA graphs on a GPU); default on
    max_len: int | None = None  # positions in the fast path's caches (default: the export's decode.max_len)
    baseline: bool = True  # also time the fastest autoregressive path on the same prompts
    quiet: bool = False


DECODE_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "fast", "max_len")


def parse_args(argv: list[str]) -> DecodeArgs:
    args = parse(DecodeArgs, argv, required=("run",))
    check_ranges(
        args,
        [
            ("temperature", lambda v: v == 0 or 1e-3 <= v <= 100, "0 (greedy) or in [0.001, 100]"),
            ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("top_k", lambda v: v >= 0, ">= 0 (0 = off)"),
            ("max_new_tokens", lambda v: v >= 1, ">= 1"),
            ("max_len", lambda v: v >= 2, ">= 2"),
        ],
    )
    if args.dtype is not None:
        check_dtype(args.dtype)
    if args.prompt is None and args.prompts is None:
        raise UserError('nothing to decode: pass prompt="..." or prompts=FILE.jsonl')
    if args.prompt is not None and not args.prompt.strip():
        raise UserError('the prompt is empty: pass some text in prompt="..."')
    return args


def questions_of(args: DecodeArgs) -> list[dict]:
    if args.prompt is not None:
        return [{"question_id": 0, "category": "prompt", "turns": [args.prompt]}]
    return read_questions(args.prompts)


def answers_path(args: DecodeArgs) -> Path | None:
    """Where answers go; checked writable before any model loads."""
    if args.prompts is None:
        return None
    folder = find_export(args.run)
    out = Path(args.out or folder.parent / "decode" / Path(args.prompts).with_suffix(".answers.jsonl").name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write answers to {out}: {e.strerror}; pass a writable out=PATH") from None
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write answers to {out}: folder not writable; pass a writable out=PATH")
    return out


class Baseline:
    """The fastest autoregressive path here: our fast target alone (HF generate with fast=false).

    On a CPU, a target in a dtype other than fp32 also runs as an fp32 copy of itself, and each
    prompt's baseline is the faster of the two: there bf16 can be the slower for one position at a
    time (bench/results/cpu-bf16). Our fast target alone beats HF generate on a CPU as well
    (bench/results/cpu-fastpath).
    """

    def __init__(self, engine, target, tokenizer, dcfg):
        self.eos, self.params, self.models = eos_ids(target, tokenizer), engine.params, [target]
        if target.device.type == "cpu" and target.dtype != torch.float32:
            self.models.append(copy.deepcopy(target).float())
        self.engines = []
        if engine.fast:
            for m in self.models:
                self.engines.append(make_engine(m, tokenizer, [NoDraftArm("target_only", m.config.vocab_size)], dcfg))
                self.engines[-1].warmup()
        else:
            for m in self.models:  # first-call costs out of the first prompt's time
                hf_generate(m, [3, 4, 5], 2, self.eos, self.params)
        dtypes = " and ".join(str(m.dtype).removeprefix("torch.") for m in self.models)
        what = "our fast target alone" if self.engines else "HF generate"
        self.name = f"{what}, {'the faster of ' if len(self.models) > 1 else ''}{dtypes}"

    def seconds_per_token(self, ids: list[int], n: int) -> float:
        if self.engines:
            runs = [e.generate(ids, n, chooser_for(None, fixed=0)[0]) for e in self.engines]
            return min(g.seconds / max(len(g.tokens), 1) for g in runs)
        runs = [hf_generate(m, ids, n, self.eos, self.params) for m in self.models]
        return min(secs / max(len(tokens), 1) for tokens, secs in runs)


def dtype_line(asked: str, model) -> str:
    """The dtype decoding runs in, why, and what it means for exactness."""
    dtype, device = str(model.dtype).removeprefix("torch."), next(model.parameters()).device
    where = {"cuda": "a GPU", "cpu": f"a CPU {'with' if cpu_multiplies_bf16() else 'without'} bf16 matrix units"}
    why = f"auto on {where.get(device.type, device.type)}" if asked == "auto" else f"dtype={asked}"
    exact = model.dtype == torch.float32
    return f"{dtype} ({why})" + (
        "" if exact else "; tokens may differ from fp32 greedy where rounding differs, dtype=fp32 is exact"
    )


def seconds_by_name(times: dict) -> str:
    """'target 3.1s, code 0.4s (22 graphs), ...' from {name: seconds} or {name: {"seconds", "graphs"}}."""
    parts = []
    for name, t in times.items():
        extra = f" ({t['graphs']} graphs)" if isinstance(t, dict) and t.get("graphs") else ""
        parts.append(f"{name} {t['seconds'] if isinstance(t, dict) else t:.1f}s{extra}")
    return ", ".join(parts)


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
    questions, out = questions_of(args), answers_path(args)
    ens = load_ensemble(args.run, args.device, args.dtype, args.arm)
    dcfg = OmegaConf.create(ens.manifest["decode"])
    for key in DECODE_KEYS:
        if getattr(args, key) is not None:
            dcfg[key] = getattr(args, key)
    greedy = float(dcfg.temperature) == 0  # the fitted prior comes from greedy logs: not reused when sampling
    chooser, feedback = chooser_for(
        ens, policy=args.policy, arm=args.arm, feedback=args.feedback, greedy=greedy, sleeping=args.sleeping
    )
    model, tok = ens.target.model, ens.target.tokenizer
    engine = make_engine(model, tok, ens.arms, dcfg, full_feedback=feedback == "full")
    engine.check_request(1, int(dcfg.max_new_tokens))
    check_fits(questions, tok, engine, int(dcfg.max_new_tokens))
    console.print(f"start-up: loaded in {sum(ens.load_seconds.values()):.1f}s ({seconds_by_name(ens.load_seconds)})")
    console.print(f"dtype: {dtype_line(args.dtype or dcfg.get('dtype', 'auto'), model)}")
    warm = engine.warmup()
    graphs = "graphs captured, " if engine.fast and engine.device.type == "cuda" else ""
    what = f"{graphs}target step timed" + (", a first request per arm" if engine.fast else "")
    console.print(f"start-up: {what} in {warm:.1f}s (fast={engine.fast})"
                  + (f" ({seconds_by_name(engine.warmup_profile)})" if engine.warmup_profile else ""))  # fmt: skip
    if engine.fast and getattr(engine.target, "fallback", None):
        console.print(f"fast path: the target runs through its HF forward ({engine.target.fallback})")
    baseline = Baseline(engine, model, tok, dcfg) if args.baseline else None
    if baseline is not None:
        console.print(f"baseline: {baseline.name}")
    torch.manual_seed(args.seed)
    stats, chosen = [], []
    with Answers(out) as answers:
        for q in questions:
            record = answer(q, engine, chooser, tok, int(dcfg.max_new_tokens), baseline, console, args.prompt)
            stats.extend(record["stats"])
            chosen.extend(record.pop("arms"))
            answers.write(record)
    summary = summarize(stats)
    console.print(summary_table(summary, ens.arm_names, baseline.name if baseline else None))
    if out is not None:
        plots.arm_timeline(
            chosen, ens.arm_names, "drafter chosen per round (all requests in order)", out.with_suffix(".arms.png")
        )
        console.print(f"answers: {out}  arm plot: {out.with_suffix('.arms.png')}")
    return summary


TURN_SLACK = 16  # template tokens a later turn may add around the earlier answer


def check_fits(questions: list[dict], tok, engine, n: int) -> None:
    """Every question fits the engine before any is decoded (a file does not stop halfway): its user
    turns plus up to n new tokens per turn, and a few template tokens per later turn."""
    for q in questions:
        ids = chat_ids(tok, [{"role": "user", "content": t} for t in q["turns"]])
        try:
            engine.check_request(len(ids), n + (len(q["turns"]) - 1) * (n + TURN_SLACK))
        except UserError as e:
            raise UserError(f"question {q['question_id']}: {e}") from None


def answer(q, engine, chooser, tok, n: int, baseline, console, streamed) -> dict:
    """Every turn of one question; per-turn stats carry the question's category."""
    messages, answers, stats, arms = [], [], [], []
    for turn in q["turns"]:
        messages.append({"role": "user", "content": turn})
        ids = chat_ids(tok, messages)
        gen = engine.generate(ids, n, chooser, on_tokens=Streamer(tok, console) if streamed is not None else None)
        text = tok.decode(gen.tokens, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": text})
        s = {**gen.summary(), "category": q["category"]}
        if baseline is not None:
            s["baseline_seconds"] = baseline.seconds_per_token(ids, n) * len(gen.tokens)
        answers.append(text)
        stats.append(s)
        arms.extend(r.arm for r in gen.rounds)
    if streamed is not None:
        console.print()
    return {**q, "answers": answers, "stats": stats, "arms": arms}


class Answers:
    """Answers are appended as they finish to `<out>.partial`, renamed to `out` when all are done."""

    def __init__(self, out: Path | None):
        self.out, self.file = out, None

    def __enter__(self):
        if self.out is not None:
            self.file = open(self.out.with_name(self.out.name + ".partial"), "w", encoding="utf-8")
        return self

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def __exit__(self, exc_type, *_):
        if self.file is not None:
            self.file.close()
            if exc_type is None:
                os.replace(self.file.name, self.out)


def summary_table(summary: dict, arm_names: list[str], baseline: str | None) -> Table:
    title = "decode summary (τ = mean tokens per round" + (f"; speed-up over {baseline})" if baseline else ")")
    columns = ["category", "requests", "tokens", "τ", "tok/s"] + (["baseline tok/s", "speed-up"] if baseline else [])
    table = Table(*columns, "arm shares", title=title)
    for cat, r in summary.items():
        shares = " ".join(f"{a}:{r['arm_share'].get(a, 0):.0%}" for a in arm_names if r["arm_share"].get(a, 0) > 0)
        row = [cat, str(r["requests"]), str(r["new_tokens"]), f"{r['tau']:.2f}", f"{r['tokens_per_s']:.1f}"]
        if baseline:
            row += [f"{r['baseline_tokens_per_s']:.1f}", f"{r['speedup']:.2f}x"]
        table.add_row(*row, shares)
    return table


def main(argv: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    decode(parse_args(argv))
