"""The fast forward (fastmodel.FastModel under StaticLM) reproduces HF's forward, features and greedy output."""

import random

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.cache import CachedLM
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.fastmodel import FastModel, unsupported
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.decoding.static_cache import HFForward, StaticLM, spans_for
from metasd_train.errors import UserError
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_llama, tiny_qwen2


def qwen2(layers: int = 3, seed: int = 1):
    """Qwen2 with drawn q/k/v biases, 6 query heads on 2 KV heads, a tied head and a non-default RoPE base."""
    return tiny_qwen2(V, layers, 48, seed, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500.0)


V = 32


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    if request.param == "llama":
        return tiny_llama(V, layers=3, seed=1)  # untied head, 4 query heads on 2 KV heads
    m = qwen2()
    assert m.model.layers[0].self_attn.q_proj.bias.abs().min() > 0 and m.config.tie_word_embeddings
    return m


def assert_near(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal within `rel` of the reference's largest magnitude (elementwise rtol is noise near 0)."""
    err = (got.float() - ref.float()).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"max error {err:.3g} vs scale {ref.abs().max().item():.3g}"


def different_tokens(old: list[int], rng: random.Random, n: int) -> list[int]:
    """n new tokens; where a position had a token before, a different one (stale slots must not leak)."""
    return [(old[i] + rng.randrange(1, V)) % V if i < len(old) else rng.randrange(V) for i in range(n)]


def test_supported_families_and_refusals(model):
    assert unsupported(model) is None
    lm = StaticLM(model, V, max_len=16, widths=(1, 2))
    assert lm.fallback is None and isinstance(lm.net, FastModel)
    assert isinstance(StaticLM(model, V, max_len=16, widths=(1, 2), fast_forward=False).net, HFForward)
    with pytest.raises(UserError, match="compile='max'"):
        FastModel(model, 16, compile="max")


def test_unsupported_models_fall_back_with_a_reason():
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_llama(V, layers=1), LoraConfig(r=2, target_modules=["q_proj"]))
    assert "is not one of" in unsupported(lora)
    lm = StaticLM(lora, V, max_len=16, widths=(1, 2))
    assert isinstance(lm.net, HFForward) and "is not one of" in lm.fallback
    scaled = tiny_llama(V, layers=1, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})
    assert "RoPE" in unsupported(scaled)
    with pytest.raises(UserError, match="cannot run this model"):
        FastModel(scaled, 16)


def test_logits_equal_hf_across_widths_spans_and_rewinds(model):
    """Chunks of several widths (12 > the widest: chunked), crossing spans 4, 8, 16, 32, with rewinds
    after which *different* tokens are fed, so a stale key/value slot would change the logits."""
    lm = StaticLM(model, V, max_len=60, widths=(1, 2, 3, 5, 8))
    lm.spans = (4, 8, 16, 32, lm.spans[-1])
    assert lm.fallback is None
    rng = random.Random(1)
    seq = [rng.randrange(V) for _ in range(6)]
    logits, hidden = lm.forward(torch.tensor(seq), hidden=True)
    ref = model(torch.tensor([seq]), output_hidden_states=True)
    assert_near(logits, ref.logits[0])
    assert_near(hidden, ref.hidden_states[-1][0])
    stale = 0
    while lm.seen < 50:
        start, n = lm.seen, rng.choice([1, 2, 3, 4, 5, 7, 12])
        fed = len(seq) - start  # positions past `start` that were fed before (stale slots)
        stale += min(fed, n)
        seq = seq[:start] + different_tokens(seq[start:], rng, n)
        got = lm.forward(torch.tensor(seq[start:]))
        assert_near(got, model(torch.tensor([seq])).logits[0, start:])
        if rng.random() < 0.5:
            lm.rewind(lm.seen - rng.randint(1, 6))  # a rejection: the rest is fed again, differently
    assert stale > 10


def feature_lms(model, layers):
    return {
        "static-fast": StaticLM(model, V, max_len=100, widths=(1, 2, 3, 5, 8), feature_layers=layers),
        "static-hf": StaticLM(model, V, max_len=100, widths=(1, 2, 3, 5, 8), fast_forward=False, feature_layers=layers),
        "cached": CachedLM(model, V, feature_layers=layers),
    }


def test_features_equal_hf_hidden_states_at_the_chosen_layers(model):
    """Prefill, verify-sized chunks and a catch-up, with a rewind; [embeddings, layer 2, last (after the norm)]."""
    layers = (0, 2, -1)
    rng = random.Random(2)
    for name, lm in feature_lms(model, layers).items():
        seq = [rng.randrange(V) for _ in range(70)]  # past CachedLM's first 64 rows: the buffer grows
        lm.forward(torch.tensor(seq), hidden=True)
        lm.rewind(60)
        seq = seq[:60] + different_tokens(seq[60:], rng, 4)
        lm.forward(torch.tensor(seq[60:]))
        seq += [rng.randrange(V) for _ in range(11)]
        lm.forward(torch.tensor(seq[64:]))
        states = model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        ref = torch.cat([states[i][0] for i in layers], dim=-1)
        assert lm.features.shape[1] == 3 * model.config.hidden_size and not lm.features.is_inference(), name
        assert_near(lm.features[: len(seq)], ref)


def test_feature_layers_out_of_range_are_refused(model):
    with pytest.raises(UserError, match="hidden states are 0..3"):
        StaticLM(model, V, max_len=16, widths=(1,), feature_layers=(4,))


def test_engine_with_the_fast_forward_matches_hf_greedy(model):
    arms = [ModelArm("trunc1", truncated(model, 1), V, gamma=4), NgramArm("ngram", V, gamma=3)]
    engine = SpecEngine(model, arms, SamplingParams(), eos_ids=[1], fast=True, max_len=64)
    assert engine.target.fallback is None and all(lm.fallback is None for lm in engine.lms.values())
    chooser = BanditChooser(RandomArm(len(arms), seed=3))
    rng = random.Random(0)
    for _ in range(6):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(1, 10))]
        n = rng.randint(4, 20)
        ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=1, pad_token_id=1)
        assert engine.generate(prompt, n, chooser).tokens == ref[0, len(prompt) :].tolist()


def test_spans_leave_out_a_power_of_two_the_length_barely_exceeds():
    assert spans_for(2080) == (256, 512, 1024, 2080)  # not 2048 as well: a graph per width for 32 slots
    assert spans_for(1280) == (256, 512, 1280)  # 1280 = 1.25 x 1024
    assert spans_for(1300) == (256, 512, 1024, 1300)
    assert spans_for(200) == (200,)
