"""The engine is lossless for a Qwen2 target too: q/k/v biases, 6 query heads on 1 KV head, untied head."""

import random

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_qwen2

V = 32


@pytest.fixture(scope="module")
def target():
    model = tiny_qwen2(V, layers=3, seed=1)
    attn = model.model.layers[0].self_attn
    assert type(model).__name__ == "Qwen2ForCausalLM" and attn.k_proj.bias.abs().min() > 0
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (6, 1)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    return model


def reference(target, prompt, n):
    out = target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=1, pad_token_id=1)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("fast", [False, True], ids=["dynamic-cache", "static-cache"])
def test_greedy_matches_generate_with_random_switching(target, fast):
    arms = [ModelArm("trunc1", truncated(target, 1), V, gamma=4), ModelArm("trunc2", truncated(target, 2), V, gamma=2)]
    engine = SpecEngine(
        target, [*arms, NgramArm("ngram", V, gamma=3)], SamplingParams(), eos_ids=[1], fast=fast, max_len=64
    )
    chooser = BanditChooser(RandomArm(len(engine.arms), seed=3))
    rng = random.Random(0)
    accepted = rejected = 0
    for _ in range(10):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(1, 12))]
        prompt += prompt[: rng.randint(0, len(prompt))]  # repeats give the n-gram arm something
        n = rng.randint(4, 20)
        gen = engine.generate(prompt, n, chooser)
        assert gen.tokens == reference(target, prompt, n)
        accepted += sum(r.accepted for r in gen.rounds)
        rejected += sum(r.drafted - r.accepted for r in gen.rounds)
    assert accepted > 10 and rejected > 10  # both branches ran
