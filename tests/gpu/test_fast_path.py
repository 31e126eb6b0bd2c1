"""The CUDA-graph fast path reproduces the eager paths token for token (skipped without a GPU)."""

import random

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.decoding.static_cache import StaticLM
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_llama, tiny_qwen2

pytestmark = pytest.mark.gpu
V = 64
COMPILES = pytest.mark.parametrize("compile", ["none", "fused", "static", "layer"])


def engine_for(target, fast, graphs=True, params=SamplingParams(), compile="fused", full_feedback=False):
    arms = [ModelArm("trunc1", truncated(target, 1), V, 4), ModelArm("trunc2", truncated(target, 2), V, 3)]
    arms.append(NgramArm("ngram", V, 3))
    engine = SpecEngine(
        target, arms, params, eos_ids=[], fast=fast, max_len=128, compile=compile, full_feedback=full_feedback
    )
    for lm in [engine.target, *engine.lms.values()] if fast else []:
        lm.graphs = graphs
        lm.spans = (16, 32, 64, lm.spans[-1])  # requests cross spans: one graph per (width, span)
    if not graphs:
        engine.sampled_verify = None  # the eager rule, verify_sampling
    return engine


def prompts(n=20):
    rng = random.Random(0)
    return [[rng.randrange(2, V) for _ in range(rng.randint(1, 16))] for _ in range(n)]


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def target(request):
    return tiny_llama(V, layers=3, seed=1).to("cuda", request.param)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def family(request):
    return (
        tiny_llama(V, layers=3, seed=1)
        if request.param == "llama"
        else tiny_qwen2(V, 3, 48, 1, num_key_value_heads=2, tie_word_embeddings=True)
    )


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


def feed(lm: StaticLM, seq: torch.Tensor) -> torch.Tensor:
    """Prefill, then chunks of several widths with rewinds, the same on every call; all logits fed back."""
    rng = random.Random(0)
    out = [lm.forward(seq[:7], hidden=True)[0]]
    while lm.seen < 100:
        start, n = lm.seen, rng.choice([1, 2, 3, 5, 7, 12])
        out.append(lm.forward(seq[start : start + n]))
        if rng.random() < 0.4:
            lm.rewind(start + rng.randrange(n + 1))
    return torch.cat(out)


@COMPILES
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fast_forward_graphs_match_no_graphs_bitwise(family, dtype, compile):
    """The fast forward replayed as graphs and run without them: the same logits and features, bit for bit."""
    model = family.to("cuda", dtype)
    seq = torch.randint(2, V, (120,), generator=torch.Generator().manual_seed(0)).cuda()
    runs = []
    for graphs in (True, False):
        lm = StaticLM(model, V, max_len=128, widths=(1, 2, 3, 5, 8), compile=compile, feature_layers=(0, 2, 3))
        lm.graphs, lm.spans = graphs, (16, 32, 64, lm.spans[-1])
        assert lm.fallback is None and lm.net.compile == compile
        runs.append((feed(lm, seq), lm.features[: lm.seen].clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@COMPILES
def test_fast_forward_logits_match_hf_fp32(family, compile):
    """Each chunk's logits against HF's full forward, with GPU kernels (SDPA, cuBLAS, compiled code)."""
    model = family.to("cuda", torch.float32)
    seq = torch.randint(2, V, (120,), generator=torch.Generator().manual_seed(1)).cuda()
    full = model(seq[None]).logits[0]
    lm = StaticLM(model, V, max_len=128, widths=(1, 2, 3, 5, 8), compile=compile)
    lm.spans = (16, 32, 64, lm.spans[-1])
    rng = random.Random(1)
    lm.forward(seq[:7], hidden=True)
    while lm.seen < 100:
        start, n = lm.seen, rng.choice([1, 2, 3, 5, 7, 12])
        err = (lm.forward(seq[start : start + n]) - full[start : start + n]).abs().max().item()
        assert err <= 1e-4 * full.abs().max().item(), (start, n, err)
        if rng.random() < 0.4:
            lm.rewind(start + rng.randrange(n + 1))


@COMPILES
def test_fast_greedy_matches_hf_generate_fp32(compile):
    target = tiny_llama(V, layers=3, seed=1).to("cuda")
    engine = engine_for(target, fast=True, compile=compile)
    assert engine.target.fallback is None and engine.target.net.compile == compile
    engine.warmup()
    chooser = BanditChooser(RandomArm(3, seed=2))
    for p in prompts():
        ref = target.generate(torch.tensor([p], device="cuda"), do_sample=False, max_new_tokens=40, eos_token_id=None)
        assert engine.generate(p, 40, chooser).tokens == ref[0, len(p) :].tolist()


def test_sampled_full_feedback_reads_the_graphed_p_within_its_round(target):
    """Idle arms are scored against the sampled verify graph's own p buffer, after other graphs have
    replayed: the scores and tokens equal the eager verify's, round by round."""
    params = SamplingParams(temperature=0.8)
    runs = []
    for graphs in (True, False):
        engine = engine_for(target, fast=True, graphs=graphs, params=params, full_feedback=True)
        chooser = BanditChooser(RandomArm(3, seed=2))
        torch.manual_seed(0)
        gens = [engine.generate(p, 30, chooser) for p in prompts(8)]
        runs.append([(g.tokens, [sorted((i, s.accepted) for i, s in r.idle.items()) for r in g.rounds]) for g in gens])
    assert runs[0] == runs[1]


def test_sampled_verify_graphs_equal_the_eager_round_bitwise():
    """One replay per draft length = round_outcome run eagerly on the same draws, every k."""
    from metasd_train.decoding.sampled_verify import SampledVerify
    from metasd_train.decoding.sampling import logits_to_probs, round_outcome

    params = SamplingParams(temperature=0.7, top_k=20)
    verify = SampledVerify(V, 5, params, torch.device("cuda"))
    verify.warmup()
    assert verify.graph_count == 5
    for k in range(5):
        for seed in range(10):
            logits = torch.randn(k + 1, V, device="cuda") * 3
            q = logits_to_probs(torch.randn(k, V, device="cuda") * 3, params)
            draft = torch.multinomial(q, 1).squeeze(1) if k else torch.zeros(0, dtype=torch.long, device="cuda")
            g = torch.Generator("cuda").manual_seed(seed)
            got = [t.clone() for t in verify(logits, q, draft, g)]
            g = torch.Generator("cuda").manual_seed(seed)
            u, noise = (
                torch.rand(k, device="cuda", generator=g),
                torch.empty(V, device="cuda").exponential_(1, generator=g),
            )
            want = round_outcome(logits, q, draft, u, noise, params)
            for a, b in zip(got, want):
                assert torch.equal(a, b)
