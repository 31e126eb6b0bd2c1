"""Head arms in the engine: greedy output equals HF greedy with heads drafting from target features,
catching up after sitting out, scored idle, and sampling follows the target's distribution."""

import random

import pytest
import torch
from test_engine_sampling import chi_square_p  # tests/unit is on sys.path under pytest

from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.head_arm import HeadArm, HeadRuntime
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models.draft_vocab import token_counts
from metasd_train.models.drafters import truncated
from metasd_train.models.head import build_head
from metasd_train.models.random_init import tiny_llama

V = 32


class Choose:
    """A chooser that switches arms at random (the bandit's job is elsewhere)."""

    def __init__(self, n: int, seed: int = 0, weights=None):
        self.n, self.rng, self.weights, self.records = n, random.Random(seed), weights, []

    def begin(self, ctx):
        pass

    def select(self, ctx):
        return self.rng.choices(range(self.n), self.weights)[0]

    def observe(self, ctx, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def target():
    return tiny_llama(V, layers=4, seed=1)


def known_prompts() -> list[list[int]]:
    """Prompts whose continuations the heads below were fitted on (so they are often right there)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(2, V, (32, 4), generator=gen).tolist()


def fit(head, target, steps: int = 150):
    """Adam steps on the target's own greedy continuations of `known_prompts()`."""
    with torch.no_grad():
        seqs = target.generate(torch.tensor(known_prompts()), do_sample=False, max_new_tokens=28, pad_token_id=0,
                               eos_token_id=None)  # fmt: skip
        out = target(seqs, output_hidden_states=True)
        feats = torch.cat([out.hidden_states[i] for i in head.config.feature_layers], -1)
        embeds = target.get_input_embeddings()(torch.cat([seqs[:, 1:], seqs[:, -1:]], 1))
        labels = torch.cat([seqs[:, 2:], seqs[:, -2:]], 1)  # row t predicts x_{t+2}
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        outs = head.unroll(feats, embeds, torch.ones_like(seqs), steps=2)
        loss = sum(torch.nn.functional.cross_entropy(head.full_vocab_logits(head.logits(o))[:, :-2].flatten(0, 1),
                                                     labels[:, :-2].flatten()) for o in outs)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval().requires_grad_(False)


def head_arm(target, name: str, k: int, seed: int, gamma: int) -> HeadArm:
    counts = token_counts([list(range(V)) * 2, list(range(k))], V)  # the first k ids are the most frequent
    head = fit(build_head(target, k, counts, eos_ids=[1], seed=seed), target)
    return HeadArm(name, head, target.get_input_embeddings(), V, gamma)


@pytest.fixture(scope="module")
def arms(target):
    return [
        head_arm(target, "head_full", V, seed=3, gamma=4),  # draft vocabulary = the target's
        head_arm(target, "head_small", 12, seed=4, gamma=3),  # proposes only 12 of the 32 tokens
        ModelArm("trunc", truncated(target, 2), V, gamma=3),
        NgramArm("ngram", V, gamma=3),
    ]


def engine_for(target, arms, fast: bool, **kw) -> SpecEngine:
    return SpecEngine(target, arms, SamplingParams(), eos_ids=[1], fast=fast, max_len=256, **kw)


def reference(target, prompt, n):
    out = target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=1, pad_token_id=1)
    return out[0, len(prompt) :].tolist()


FAST = pytest.mark.parametrize("fast", [False, True], ids=["dynamic-cache", "static-cache"])


@FAST
def test_greedy_with_head_arms_matches_generate(target, arms, fast):
    engine = engine_for(target, arms, fast)
    chooser = Choose(len(engine.arms), seed=1, weights=[4, 4, 1, 1])  # heads mostly; others make them sit out
    rng = random.Random(0)
    for i in range(16):  # prompts the heads know alternate with new ones
        prompt = known_prompts()[i] if i % 2 else [rng.randrange(2, V) for _ in range(rng.randint(1, 12))]
        n = rng.randint(1, 40)
        assert engine.generate(prompt, n, chooser).tokens == reference(target, prompt, n)
    heads = [r for r in chooser.records if r.arm_name.startswith("head")]
    assert sum(r.accepted for r in heads) > 10 and sum(r.drafted - r.accepted for r in heads) > 10
    assert sum(r.drafted for r in heads if r.arm_name == "head_small") > 0  # the reduced-vocabulary head drafted


def test_small_vocabulary_head_proposes_only_its_tokens(target, arms):
    engine = engine_for(target, arms, fast=False)
    arm = engine.arms[1]
    allowed = set((torch.arange(12) + arm.head.d2t).tolist())
    seen = set()
    original = arm.draft

    def spy(seq, k, params, early_stop=0.0, generator=None):
        tokens, q = original(seq, k, params, early_stop, generator)
        seen.update(tokens.tolist())
        assert torch.all(q[:, sorted(set(range(V)) - allowed)] == 0)
        return tokens, q

    arm.draft = spy
    try:
        engine.generate([5, 6, 7, 8], 30, Choose(len(engine.arms), weights=[0, 1, 0, 0]))
    finally:
        del arm.draft
    assert seen and seen <= allowed


@FAST
def test_full_feedback_scores_idle_heads_and_stays_lossless(target, arms, fast):
    engine = engine_for(target, arms, fast, full_feedback=True)
    chooser = Choose(len(engine.arms), seed=2)
    prompt = [4, 5, 6, 4, 5]
    assert engine.generate(prompt, 40, chooser).tokens == reference(target, prompt, 40)
    idle_heads = [r.idle[i] for r in chooser.records for i in (0, 1) if i in r.idle]
    assert idle_heads and all(0 <= s.accepted <= s.drafted for s in idle_heads)


def test_head_catch_up_matches_one_long_forward(target, arms):
    """A head that sat out many rounds catches up in chunks: its cache equals feeding all at once."""
    engine = engine_for(target, arms, fast=True)
    chooser = Choose(len(engine.arms), seed=3, weights=[0, 0, 0, 1])  # only the n-gram arm drafts...
    prompt = list(range(2, 12)) * 2
    engine.eos_ids = set()
    gen = engine.generate(prompt, 60, chooser)
    arm, seq = engine.arms[0], prompt + gen.tokens
    rt = arm.rt
    feats = engine.target.features[: len(seq) - 2]
    ids = torch.tensor(seq[1 : len(seq) - 1])
    rt.reset()
    _, chunked = rt.run(arm.head.fuse(feats), ids, 0)  # 76 positions: chunks of 32
    whole = arm.head.step(arm.head.fuse(feats), arm.embed(ids), torch.arange(len(ids)), arm.head.new_cache(128), 128)[1]
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


def test_sampling_with_a_head_at_gamma_3_follows_the_target():
    """Three sampled tokens from a head arm (γ = 3) match the target's exact joint distribution."""
    v = 4
    target = tiny_llama(v, layers=2, seed=11)
    counts = token_counts([list(range(v))], v)
    head = build_head(target, v, counts, eos_ids=[], seed=5).eval()
    with torch.no_grad():
        head.lm_head.weight.mul_(30)  # a confident, often wrong head: many rejections and corrections
    params = SamplingParams(temperature=1.0)
    engine = SpecEngine(target, [HeadArm("head", head, target.get_input_embeddings(), v, 3)], params, eos_ids=[])
    prompt, n = [2, 3, 2], 4  # 4 tokens: the first round may draft all 3; the first 3 tokens are counted
    chooser = Choose(1)
    got = torch.zeros(v, v, v)
    torch.manual_seed(0)
    for _ in range(2000):
        a, b, c, _ = engine.generate(prompt, n, chooser).tokens
        got[a, b, c] += 1
    with torch.no_grad():
        seqs = torch.tensor([[*prompt, a, b] for a in range(v) for b in range(v)])
        p = target(seqs).logits.softmax(-1)  # [v*v, T, v]
        p1 = p[0, len(prompt) - 1]
        p2 = p[::v, len(prompt)]
        p3 = p[:, len(prompt) + 1].view(v, v, v)
    exact = p1[:, None, None] * p2[:, :, None] * p3
    assert sum(r.drafted == 3 for r in chooser.records) > 1000  # γ = 3 blocks were drafted
    assert chi_square_p(got, exact) > 1e-3


def test_the_heads_of_an_ensemble_share_one_target_forward_per_logged_sequence(target, arms):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return target(*args, **kwargs)

    seq = [2, 3, 4, 5, 2, 3, 4, 6, 7]
    first, second = (arm.block_matches(seq, 3, counted) for arm in arms[:2])
    assert len(calls) == 1
    assert first == arms[0].block_matches(seq, 3, target)  # the shared states are the target's own
    arms[0].block_matches(seq + [8], 3, counted)
    assert len(calls) == 2  # another sequence: a new forward


def test_warmup_profiles_the_target_and_every_cached_arm(target, arms):
    engine = engine_for(target, arms, fast=True)
    engine.warmup()
    profile = engine.warmup_profile  # the n-gram has no cache; a request per arm pays first-call costs
    assert list(profile) == ["target", "head_full", "head_small", "trunc", "first requests"]
    assert all(p["seconds"] >= 0 and p["graphs"] == 0 for p in profile.values())  # no graphs on CPU


def test_warmup_requests_leave_the_random_state_as_they_found_it(target, arms):
    for own in (None, torch.Generator().manual_seed(5)):  # draws from torch's random state, or the engine's
        engine = SpecEngine(target, arms, SamplingParams(temperature=1.0), eos_ids=[1], fast=True, max_len=256)
        engine.generator = own
        torch.manual_seed(7)
        before = (own or torch.default_generator).get_state()
        engine.warmup()
        assert "first requests" in engine.warmup_profile  # sampled requests ran, drawing random numbers
        assert torch.equal((own or torch.default_generator).get_state(), before)


def test_a_heads_spans_start_at_1024(target, arms):
    head = HeadRuntime(arms[0].head, target.get_input_embeddings(), None, 2048, False, 3)
    assert head.spans == (1024, 2080)  # a head's first span is HEAD_SMALLEST_SPAN
