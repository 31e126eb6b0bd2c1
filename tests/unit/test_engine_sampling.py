"""Sampled output follows the target's distribution exactly: chi-square tests on the first four tokens.

Four new tokens with γ >= 3 let a round draft three tokens, so a token accepted after a rejection,
a stale cache entry after a rejection, or a wrong residual shows up in the joint distribution. The
models are stub LMs whose next-token logits are a table over the last two tokens; they keep their
history in the HF DynamicCache the engine gives them, so catch-ups and rewinds are the real ones,
and a run costs a millisecond or two. At N = 3000 runs a setting the negative controls fail by
far (the test has the power to see those bugs).
"""

import itertools
from types import SimpleNamespace

import pytest
import torch

from metasd_train.decoding import engine as engine_module
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams, logits_to_probs, sample

V, EOS, NEW, N = 4, 0, 4, 3000
PROMPT = [1, 2, 3, 1, 2]  # the n-gram arm proposes [3, 1, 2] here
PAD = V  # outcome slots after EOS


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny ops: a second intra-op thread only adds contention (badly so on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StubConfig(SimpleNamespace):
    def __init__(self, vocab_size: int):
        super().__init__(vocab_size=vocab_size, hidden_size=4, num_hidden_layers=1, max_position_embeddings=1024,
                         layer_types=["full_attention"], per_layer_config=[SimpleNamespace()])  # fmt: skip

    def get_text_config(self, decoder=True):
        return self


class TableLM(torch.nn.Module):
    """Next-token logits = table[token before last, last token]; the tokens seen so far are the keys
    of its (HF DynamicCache) KV cache, so a cache that kept a rejected token gives wrong logits."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)  # [V, V, V]
        self.config = StubConfig(table.shape[-1])

    def forward(self, input_ids, past_key_values=None, use_cache=True, output_hidden_states=False, **kw):
        # input_ids: [1, S] -> logits [1, S, V]
        s = input_ids.shape[1]
        keys, _ = past_key_values.update(*[input_ids.float().view(1, 1, s, 1)] * 2, 0)
        seen = keys.view(-1).long()  # every token fed so far, these included
        before = torch.cat([seen.new_zeros(1), seen])[-s - 1 : -1]
        logits = self.table[before, seen[-s:]][None]
        return SimpleNamespace(logits=logits, hidden_states=(torch.zeros(1, s, 4),) if output_hidden_states else None)


def table(seed: int, base: torch.Tensor | None = None, noise: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(V, V, V, generator=g) * 1.5 if base is None else base + noise * torch.randn(V, V, V, generator=g)
    t[..., EOS] -= 1.0  # EOS now and then, inside accepted blocks too
    return t


TARGET = table(11)
DRAFTERS = {"near": table(12, TARGET, 0.8), "far": table(13, TARGET, 2.0)}


class Chooser:
    """Random arm per round (seeded): arm switching, with every arm catching up on what it missed."""

    def __init__(self, n_arms: int):
        self.n, self.gen = n_arms, torch.Generator().manual_seed(3)

    def begin(self, ctx): ...

    def select(self, ctx) -> int:
        return int(torch.randint(self.n, (1,), generator=self.gen))

    def observe(self, ctx, record): ...


def exact_distribution(params: SamplingParams) -> torch.Tensor:
    """P(outcome) over every (x1..x4) the target can produce from PROMPT, slots after EOS set to PAD."""
    probs = torch.zeros((V + 1,) * NEW)
    for seq in itertools.product(range(V), repeat=NEW):
        ctx, p, out = list(PROMPT), 1.0, []
        for x in seq:
            p *= float(logits_to_probs(TARGET[ctx[-2], ctx[-1]], params)[x])
            ctx.append(x)
            out.append(x)
            if x == EOS:
                break
        probs[tuple(out + [PAD] * (NEW - len(out)))] = p  # sequences sharing a prefix up to EOS: same cell
    return probs


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square p-value; cells with expected count < 5 are pooled."""
    counts, expected = counts.flatten().double(), probs.flatten().double() * counts.sum()
    small = expected < 5
    counts = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = expected > 0
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def sample_counts(arms: list, params: SamplingParams, early_stop: float = 0.0):
    """Outcome counts over N runs, and what the runs did: {rounds, first_drafts, eos_accepted}."""
    engine = SpecEngine(TableLM(TARGET), arms, params, eos_ids=[EOS], early_stop=early_stop)
    chooser = Chooser(len(arms))
    counts, seen = torch.zeros((V + 1,) * NEW), {"rounds": [], "first_drafts": [], "eos_accepted": 0}
    for _ in range(N):
        gen = engine.generate(PROMPT, NEW, chooser)
        counts[tuple(gen.tokens + [PAD] * (NEW - len(gen.tokens)))] += 1
        seen["rounds"] += gen.rounds
        seen["first_drafts"].append(gen.rounds[0].drafted)
        start = 0
        for r in gen.rounds:  # EOS among a round's accepted drafts (not its target token)
            seen["eos_accepted"] += EOS in gen.tokens[start : start + r.accepted]
            start += r.accepted + 1
    return counts, seen


def model_arm(name: str, gamma: int = 3) -> ModelArm:
    return ModelArm(name, TableLM(DRAFTERS[name]), V, gamma=gamma)


SETTINGS = {
    "one-drafter-T1": (lambda: [model_arm("near")], SamplingParams(temperature=1.0), 0.0),
    "top_k-T0.7-early_stop": (lambda: [model_arm("near", gamma=4)], SamplingParams(0.7, top_k=3), 0.62),
    "switching-3-arms-top_p": (
        lambda: [model_arm("near"), model_arm("far", gamma=4), NgramArm("ngram", V, gamma=3)],
        SamplingParams(temperature=1.0, top_p=0.8),
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_first_four_tokens_follow_the_target_distribution(name):
    make_arms, params, early_stop = SETTINGS[name]
    counts, seen = sample_counts(make_arms(), params, early_stop)
    assert chi_square_p(counts, exact_distribution(params)) > 1e-3
    # the runs went where the bugs live: 3-token drafts, a rejection with drafted tokens after it,
    # EOS inside an accepted block, early stops, every arm
    rounds = seen["rounds"]
    assert sum(d == 3 for d in seen["first_drafts"]) > (N / 2 if not early_stop else 0)
    assert sum(r.accepted < r.drafted - 1 for r in rounds) > N / 10
    assert seen["eos_accepted"] > N / 100
    if early_stop:
        assert sum(d < 3 for d in seen["first_drafts"]) > N / 10
    if len(make_arms()) > 1:
        assert len({r.arm_name for r in rounds}) == 3


def accept_after_rejection(p, q, draft, generator=None):
    """A classic bug: count every accepted draft, not only the leading run (accepted.sum())."""
    k = draft.shape[0]
    idx = torch.arange(k)
    n = (torch.rand(k) * q[idx, draft] < p[idx, draft]).long().sum()
    residual = torch.cat([(p[:k] - q).clamp_min(0), p[k:]], dim=0)[n]
    return n, sample(torch.where(residual.sum() > 0, residual, p[n]))


def resample_from_p(p, q, draft, generator=None):
    """Another classic bug: on rejection sample from p instead of norm(max(p - q, 0))."""
    k = draft.shape[0]
    idx = torch.arange(k)
    n = torch.cumprod((torch.rand(k) * q[idx, draft] < p[idx, draft]).long(), 0).sum()
    return n, sample(p[n])


@pytest.mark.parametrize("wrong_rule", [accept_after_rejection, resample_from_p])
def test_negative_controls_catch_a_wrong_acceptance_rule(monkeypatch, wrong_rule):
    """At this N the test above rejects either bug by far: it has the power to see them."""
    monkeypatch.setattr(engine_module, "verify_sampling", wrong_rule)
    make_arms, params, _ = SETTINGS["one-drafter-T1"]
    counts, _ = sample_counts(make_arms(), params)
    assert chi_square_p(counts, exact_distribution(params)) < 1e-12


def test_logits_to_probs_matches_hf_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50) * 3
    for t, k, p in itertools.product((0.5, 1.3), (0, 5), (1.0, 0.8)):
        ref = TemperatureLogitsWarper(t)(None, logits.clone())
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(p)(None, ref)
        torch.testing.assert_close(logits_to_probs(logits, SamplingParams(t, k, p)), ref.softmax(-1))


def test_the_sampled_verify_buffers_give_the_eager_rules_tokens():
    """SampledVerify's buffer plumbing (the leading rows per draft length, the draw order, k = 0) run
    eagerly, where CUDA replays its graph: the same tokens as verify_sampling from the same seed."""
    from metasd_train.decoding.sampled_verify import SampledVerify

    make_arms, params, _ = SETTINGS["switching-3-arms-top_p"]
    runs = []
    for buffered in (False, True):
        engine = SpecEngine(TableLM(TARGET), make_arms(), params, eos_ids=[EOS])
        if buffered:
            engine.sampled_verify = SampledVerify(V, engine.max_block, params, torch.device("cpu"), graphs=False)
            engine.sampled_verify.warmup()
        chooser = Chooser(len(engine.arms))
        torch.manual_seed(5)
        runs.append([engine.generate(PROMPT, NEW, chooser).tokens for _ in range(200)])
    assert runs[0] == runs[1]
    assert len({tuple(t) for t in runs[0]}) > 10  # the draws vary: this compared many outcomes
