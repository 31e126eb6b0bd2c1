"""Decoding's dtype: auto is bf16 where bf16 matrix units make it fast; the baseline races bf16 against fp32."""

import pytest
import torch
from omegaconf import OmegaConf

from metasd_train.cli import decode as decode_cli
from metasd_train.decoding.arms import NgramArm
from metasd_train.decoding.assemble import make_engine
from metasd_train.models import decode_dtype
from metasd_train.models.random_init import tiny_llama

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("amx", [True, False])
def test_auto_is_bf16_on_a_gpu_and_on_a_cpu_with_bf16_matrix_units(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert decode_dtype("auto", CUDA) == "bf16"
    assert decode_dtype("auto", CPU) == ("bf16" if amx else "fp32")
    assert decode_dtype("fp32", CUDA) == "fp32" and decode_dtype("bf16", CPU) == "bf16"  # asked for: kept


def test_auto_is_fp32_where_torch_cannot_tell(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert decode_dtype("auto", CPU) == "fp32"


def engine_for(target):
    dcfg = OmegaConf.create({"temperature": 0, "top_k": 0, "top_p": 1.0, "early_stop": 0, "fast": False, "max_len": 64})
    return make_engine(target, None, [NgramArm("ngram", 32, gamma=3)], dcfg), dcfg


@pytest.mark.parametrize("slower", ["bfloat16", "float32"])
def test_a_bf16_target_is_timed_against_the_faster_of_itself_and_an_fp32_copy(monkeypatch, slower):
    seconds = {"bfloat16": 1.0, "float32": 1.0, slower: 2.0}
    used = []

    def fake_generate(model, ids, n, eos, params, **kw):
        dtype = str(model.dtype).removeprefix("torch.")
        used.append(dtype)
        return list(range(n)), seconds[dtype] * n

    monkeypatch.setattr(decode_cli, "hf_generate", fake_generate)
    target = tiny_llama(32, layers=1, seed=0).to(torch.bfloat16)
    engine, dcfg = engine_for(target)
    baseline = decode_cli.Baseline(engine, target, None, dcfg)
    assert sorted(used) == ["bfloat16", "float32"]  # each warmed once before any prompt is timed
    assert baseline.name == "HF generate, the faster of bfloat16 and float32"
    assert target.dtype == torch.bfloat16  # the engine's target is not converted
    used.clear()
    assert baseline.seconds_per_token([3, 4], 5) == 1.0 and sorted(used) == ["bfloat16", "float32"]


def test_an_fp32_target_is_its_own_baseline(monkeypatch):
    used = []
    monkeypatch.setattr(decode_cli, "hf_generate", lambda m, ids, n, *a, **k: used.append(m) or (list(range(n)), 3.0))
    target = tiny_llama(32, layers=1, seed=0)
    engine, dcfg = engine_for(target)
    baseline = decode_cli.Baseline(engine, target, None, dcfg)
    assert baseline.name == "HF generate, float32" and used == [target]  # warmed once
    used.clear()
    assert baseline.seconds_per_token([3, 4], 5) == 0.6 and used == [target]


@pytest.mark.parametrize("slower", ["bfloat16", "float32"])
def test_with_the_fast_path_the_baseline_is_our_fast_target_alone_in_the_faster_dtype(monkeypatch, slower):
    """fast=true (a CPU too): the baseline is our fast target alone, a bf16 target raced against an fp32
    copy per prompt, never HF generate (slower than our forward on a CPU: bench/results/cpu-fastpath)."""
    from types import SimpleNamespace

    seconds = {"bfloat16": 1.0, "float32": 1.0, slower: 2.0}
    built, warmed, ran = [], [], []

    class FakeEngine:
        def __init__(self, model):
            self.dtype = str(model.dtype).removeprefix("torch.")

        def warmup(self):
            warmed.append(self.dtype)

        def generate(self, ids, n, chooser):
            ran.append(self.dtype)
            return SimpleNamespace(tokens=list(range(n)), seconds=seconds[self.dtype] * n)

    def fake_make_engine(model, tokenizer, arms, dcfg):
        built.append([a.kind for a in arms])
        return FakeEngine(model)

    monkeypatch.setattr(decode_cli, "make_engine", fake_make_engine)
    monkeypatch.setattr(decode_cli, "hf_generate", lambda *a, **k: pytest.fail("HF generate is not the baseline"))
    target = tiny_llama(32, layers=1, seed=0).to(torch.bfloat16)
    baseline = decode_cli.Baseline(SimpleNamespace(fast=True, params=None), target, None, None)
    assert baseline.name == "our fast target alone, the faster of bfloat16 and float32"
    assert sorted(warmed) == ["bfloat16", "float32"] and built == [["none"], ["none"]]
    assert baseline.seconds_per_token([3, 4], 5) == 1.0 and sorted(ran) == ["bfloat16", "float32"]
    assert target.dtype == torch.bfloat16


def test_the_summary_has_no_baseline_columns_without_a_baseline():
    summary = {"all": {"requests": 1, "new_tokens": 4, "tau": 2.0, "tokens_per_s": 8.0, "arm_share": {"ngram": 1.0}}}
    headers = [c.header for c in decode_cli.summary_table(summary, ["ngram"], None).columns]
    assert "speed-up" not in headers and "baseline tok/s" not in headers
    with_baseline = {"all": {**summary["all"], "baseline_tokens_per_s": 4.0, "speedup": 2.0}}
    assert "speed-up" in [c.header for c in decode_cli.summary_table(with_baseline, ["ngram"], "HF").columns]


@pytest.mark.parametrize("decode", ["fp32", "bf16"])
def test_the_acceptance_log_times_costs_in_decodings_dtype(decode):
    """Rows come from the training target (fp32 on a CPU); the costs the bandit's prior is fitted on are
    timed on a copy in the dtype decode.py will run in."""
    from types import SimpleNamespace

    from metasd_train.compose import compose
    from metasd_train.pipeline.stage_log_acceptance import timing_engine

    target = tiny_llama(32, layers=1, seed=0)
    ctx = SimpleNamespace(
        cfg=compose(["recipe=tiny", f"decode.dtype={decode}"]), device=CPU, target=target, tokenizer=None
    )
    engine = object()
    timed = timing_engine(ctx, [], engine)
    assert target.dtype == torch.float32  # the rows' target is untouched
    if decode == "fp32":
        assert timed is engine
    else:
        assert timed.target.model.dtype == torch.bfloat16 and [a.name for a in timed.arms] == ["ngram"]


def test_the_bench_on_a_cpu_defaults_to_fp32_and_keeps_what_it_is_asked(monkeypatch):
    """Its HF baseline rows run in the bench's dtype, and bf16 is the slower of the two on an AMX CPU."""
    from bench.harness import bench_dtype

    assert bench_dtype(None, "cpu") == "fp32" and bench_dtype("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench_dtype(None, "cuda") is None  # on a GPU: the export's decode.dtype
