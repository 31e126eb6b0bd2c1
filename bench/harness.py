"""What every bench configuration shares: the loaded ensemble, the prompts, warmed engines, and the
timed runs, each kept as per-request stats that `decoding.records.summarize` pools."""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metasd_train.data.prompts import chat_ids, read_questions
from metasd_train.decoding.arms import NoDraftArm
from metasd_train.decoding.assemble import make_engine
from metasd_train.decoding.hf_generate import hf_generate
from metasd_train.decoding.records import summarize
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.export.ensemble import load_ensemble
from metasd_train.models import pick_device
from metasd_train.models.tokenizers import eos_ids


def bench_dtype(dtype: str | None, device: str) -> str | None:
    """The export's decode dtype on a GPU; fp32 on a CPU unless asked: the HF baseline rows run in the
    bench's dtype, and on a CPU bf16 can be the slower of the two (decode.py times both per prompt)."""
    return dtype if dtype is not None or pick_device(device).type != "cpu" else "fp32"


@dataclass(frozen=True)
class Prompt:
    ids: list[int]  # the first turn through the target's chat template
    category: str
    index: int  # position in the bench's prompt list: rows of any configuration line up by it


def card_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"


def pick_prompts(path: str, per_category: int) -> list[dict]:
    """The first `per_category` questions of each category, in file order."""
    taken, out = defaultdict(int), []
    for q in read_questions(path):
        if taken[q["category"]] < per_category:
            taken[q["category"]] += 1
            out.append(q)
    return out


def engine_stats(engine, chooser, prompts: list[Prompt], n: int) -> list[dict]:
    """One `Generation.summary()` per prompt, with its category, prompt index and tokens."""
    stats = []
    for p in prompts:
        gen = engine.generate(p.ids, n, chooser)
        stats.append({**gen.summary(), "category": p.category, "prompt": p.index, "tokens": gen.tokens})
    return stats


def hf_stat(tokens: list[int], seconds: float, category: str, prompt: int) -> dict:
    """An HF `generate` call in `Generation.summary()`'s shape: one round per token, no arms."""
    n = len(tokens)
    return {
        "new_tokens": n,
        "rounds": n,
        "tau": 1.0,
        "tokens_per_s": n / max(seconds, 1e-9),
        "arm_share": {},
        "bandit_share": 0.0,
        "seconds": seconds,
        "category": category,
        "prompt": prompt,
        "tokens": tokens,
    }


def hf_stats(model, prompts: list[Prompt], n: int, eos: list[int], params=SamplingParams(), **kw) -> list[dict]:
    """HF `generate` on each prompt (kw: static=True, or `assisted(...)`'s settings)."""
    return [hf_stat(*hf_generate(model, p.ids, n, eos, params, **kw), p.category, p.index) for p in prompts]


def engine_label(temperature: float = 0.0, full_feedback: bool = False, alone: bool = False) -> str:
    return f"{'target alone' if alone else 'ensemble'}, T={temperature:g}" + (
        ", full feedback" if full_feedback else ""
    )


@dataclass
class Result:
    stats: list[dict]
    summary: dict
    wall_s: float


@dataclass
class Bench:
    """The ensemble, its prompts and greedy settings; what each configuration measured (`results`)."""

    args: object  # bench.BenchArgs
    ens: object = None  # export.ensemble.Ensemble
    prompts: list[Prompt] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    startup: dict = field(default_factory=dict)  # ensemble_load_s, load_s (per model)
    engines: dict = field(default_factory=dict)  # engine_label(...) -> warmed engine
    builds: dict = field(default_factory=dict)  # the same labels -> build and warm-up seconds
    warmups: dict = field(default_factory=dict)  # the same labels -> per-cache warm-up seconds and graphs
    shipped_engine: str | None = None  # the label of the engine the shipped policy decodes with (greedy)
    start: float = field(default_factory=time.perf_counter)

    def load(self) -> Bench:
        t = time.perf_counter()
        self.ens = load_ensemble(self.args.run, self.args.device, bench_dtype(self.args.dtype, self.args.device))
        self.startup["ensemble_load_s"] = time.perf_counter() - t
        self.startup["load_s"] = self.ens.load_seconds
        tok = self.ens.target.tokenizer
        qs = pick_prompts(self.args.prompts, self.args.per_category)
        self.prompts = [Prompt(chat_ids(tok, q["turns"][0]), q["category"], i) for i, q in enumerate(qs)]
        return self

    @property
    def model(self):
        return self.ens.target.model

    @property
    def eos(self) -> list[int]:
        return eos_ids(self.model, self.ens.target.tokenizer)

    @property
    def n(self) -> int:
        return int(self.args.max_new_tokens)

    def decode_cfg(self, temperature: float = 0.0, fast: bool | None = None):
        """The export's decode settings at `temperature` (no top-k/top-p, no early stop)."""
        fast = self.args.fast if fast is None else fast
        base = self.ens.manifest["decode"]
        return OmegaConf.create(
            {**base, "temperature": temperature, "top_k": 0, "top_p": 1.0, "early_stop": 0.0, "fast": fast}
        )

    def shipped(self) -> dict:
        """The export's bandit.json: the policy as shipped ("policy") and its config."""
        return json.loads((Path(self.ens.folder) / self.ens.manifest["bandit"] / "bandit.json").read_text())

    def engine(self, temperature: float = 0.0, full_feedback: bool = False, alone: bool = False):
        """A warmed engine (graphs captured, first-call costs paid), built once per setting."""
        key = engine_label(temperature, full_feedback, alone)
        if key not in self.engines:
            arms = [NoDraftArm("target_only", self.model.config.vocab_size)] if alone else self.ens.arms
            t = time.perf_counter()
            engine = make_engine(
                self.model, self.ens.target.tokenizer, arms, self.decode_cfg(temperature), full_feedback
            )
            built = time.perf_counter() - t
            warm = engine.warmup()  # its first requests pay every first-call cost
            self.engines[key] = engine
            self.builds[key] = {"engine_build_s": built, "engine_warmup_s": warm}
            self.warmups[key] = engine.warmup_profile
        return self.engines[key]

    def over_budget(self) -> bool:
        return bool(self.args.budget_s) and time.perf_counter() - self.start > self.args.budget_s

    def timed(self, name: str, run) -> Result | None:
        """Run one configuration (`run()` -> stats) unless past the time budget; keep and print its summary."""
        if self.over_budget():
            self.notes[name] = "skipped: over the time budget"
            print(f"skip {name}", flush=True)
            return None
        t = time.perf_counter()
        stats = run()
        result = Result(stats, summarize(stats), time.perf_counter() - t)
        self.results[name] = result
        print(f"{name:<44} {result.summary['all']['tokens_per_s']:9.1f} tok/s  ({result.wall_s:.0f}s)", flush=True)
        return result

    def tok_s(self, name: str, category: str = "all") -> float | None:
        r = self.results.get(name)
        return r.summary[category]["tokens_per_s"] if r and category in r.summary else None
