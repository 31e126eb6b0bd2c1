"""The CUDA-graph fast path reproduces the eager paths token for token (skipped without a GPU)."""

import random

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models.drafters import tiny_llama, truncated

pytestmark = pytest.mark.gpu
V = 64


def engine_for(target, fast, graphs=True, params=SamplingParams()):
    arms = [ModelArm("trunc1", truncated(target, 1), V, 4), ModelArm("trunc2", truncated(target, 2), V, 3)]
    engine = SpecEngine(target, [*arms, NgramArm("ngram", V, 3)], params, eos_ids=[], fast=fast, max_len=128)
    for lm in [engine.target, *engine.lms.values()] if fast else []:
        lm.graphs = graphs
        lm.spans = (16, 32, 64, lm.spans[-1])  # requests cross spans: one graph per (width, span)
    return engine


def prompts(n=20):
    rng = random.Random(0)
    return [[rng.randrange(2, V) for _ in range(rng.randint(1, 16))] for _ in range(n)]


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def target(request):
    return tiny_llama(V, layers=3, seed=1).to("cuda", request.param)


def test_graphs_match_static_eager_bitwise(target):
    """Same kernels with and without capture: identical tokens in fp32 and bf16, greedy and sampled."""
    for params in (SamplingParams(), SamplingParams(temperature=0.8, top_p=0.9)):
        runs = []
        for graphs in (True, False):
            engine = engine_for(target, fast=True, graphs=graphs, params=params)
            chooser = BanditChooser(RandomArm(3, seed=1))
            torch.manual_seed(0)
            runs.append([engine.generate(p, 40, chooser).tokens for p in prompts()])
        assert runs[0] == runs[1]


def test_fast_greedy_matches_hf_generate_fp32():
    target = tiny_llama(V, layers=3, seed=1).to("cuda")
    engine = engine_for(target, fast=True)
    engine.warmup()
    chooser = BanditChooser(RandomArm(3, seed=2))
    for p in prompts():
        ref = target.generate(torch.tensor([p], device="cuda"), do_sample=False, max_new_tokens=40, eos_token_id=None)
        assert engine.generate(p, 40, chooser).tokens == ref[0, len(p) :].tolist()
