"""Greedy speculative decoding is token-identical to the target's own greedy generate."""

import random
import time

import pytest
import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import RandomArm
from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.decoding.static_cache import catch_up_widths
from metasd_train.errors import UserError
from metasd_train.models.drafters import truncated
from metasd_train.models.random_init import tiny_llama

V = 32


@pytest.fixture(scope="module")
def models():
    from peft import LoraConfig, get_peft_model

    target = tiny_llama(V, layers=3, seed=1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return {
        "target": target,
        "copy": truncated(target, 3),  # identical to the target: always accepted
        "trunc": truncated(target, 1),
        "other": tiny_llama(V + 8, layers=1, hidden=16, seed=2),  # bigger vocab: logits are cut
        "lora": get_peft_model(truncated(target, 2), lora).eval(),  # an unmerged peft LoRA-adapted drafter
    }


def make_engine(models, **kw):
    arms = [ModelArm(n, models[n], V, gamma=g) for n, g in (("copy", 4), ("trunc", 3), ("other", 2), ("lora", 3))]
    arms.append(NgramArm("ngram", V, gamma=3))
    return SpecEngine(models["target"], arms, SamplingParams(), eos_ids=[1], **kw)


def reference(target, prompt, n, eos=1):
    out = target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=1)
    return out[0, len(prompt) :].tolist()


FAST = pytest.mark.parametrize("fast", [False, True], ids=["dynamic-cache", "static-cache"])


@FAST
def test_greedy_matches_generate_on_50_prompts_with_random_switching(models, fast):
    engine = make_engine(models, fast=fast, max_len=64)
    chooser = BanditChooser(RandomArm(len(engine.arms), seed=3))
    rng = random.Random(0)
    accepted = rejected = eos = copy_rounds = 0
    for _ in range(50):
        prompt = [rng.randrange(2, V) for _ in range(rng.randint(1, 12))]
        prompt += prompt[: rng.randint(0, len(prompt))]  # repeats give the n-gram arm something
        n = rng.randint(1, 24)
        gen = engine.generate(prompt, n, chooser)
        assert gen.tokens == reference(models["target"], prompt, n)
        accepted += sum(r.accepted for r in gen.rounds)
        rejected += sum(r.drafted - r.accepted for r in gen.rounds)
        eos += gen.stop == "eos"
        for r in gen.rounds:  # the target's exact copy: every draft accepted, after any catch-up
            if r.arm_name == "copy":
                assert r.accepted == r.drafted, "the copy drafter drafted from a wrong context"
                copy_rounds += r.drafted > 0
    assert accepted > 50 and rejected > 50  # both branches ran
    assert 0 < eos < 50 and copy_rounds > 20  # some requests ended on EOS, others on length
    assert {r.arm_name for r in gen.rounds} <= {a.name for a in engine.arms}


@FAST
def test_stops_exactly_at_max_new_tokens_and_eos(models, fast):
    engine = make_engine(models, fast=fast, max_len=64)
    chooser = BanditChooser(RandomArm(len(engine.arms), seed=0))
    for n in (1, 2, 5, 9):
        gen = engine.generate([5, 6, 7], n, chooser)
        ref = reference(models["target"], [5, 6, 7], n)
        assert gen.tokens == ref
        assert len(gen.tokens) == n or gen.tokens[-1] == 1
    # find a prompt whose greedy continuation hits EOS and check the engine stops right after it
    for start in range(2, V):
        ref = reference(models["target"], [start, start], 30)
        if 1 in ref:
            gen = engine.generate([start, start], 30, chooser)
            assert gen.stop == "eos" and gen.tokens == ref and gen.tokens[-1] == 1
            return
    pytest.fail("no prompt reached EOS; pick another seed")


def test_kv_caches_equal_fresh_recomputation_after_200_switches(models):
    engine = make_engine(models)
    chooser = BanditChooser(RandomArm(len(engine.arms), seed=7))
    prompt = [3, 4, 5, 6, 3, 4]
    engine.eos_ids = set()
    gen = engine.generate(prompt, 700, chooser)
    assert len(gen.rounds) >= 200
    seq = prompt + gen.tokens
    for lm in [engine.target] + [a.lm for a in engine.arms if a.kind == "model"]:
        fresh = type(lm)(lm.model, V)
        fresh.forward(torch.tensor(seq[: lm.seen]))
        for (k1, v1), (k2, v2) in zip(lm.cached_kv(), fresh.cached_kv()):
            torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
    assert engine.target.seen == len(seq) - 1


def test_static_cache_after_200_switches_and_long_catch_ups(models):
    """Positions, padding to captured widths and chunked catch-up (widths 1..5, 8) keep the output exact."""
    engine = make_engine(models, fast=True, max_len=800)
    for lm in [engine.target, *engine.lms.values()]:
        lm.widths = (1, 2, 3, 4, 5, 8)  # a catch-up of 20 tokens runs as 8 + 8 + 4 (padded to 5)
        lm._base = {w: torch.arange(w) for w in lm.widths}
    widths_fed = []
    for lm in engine.lms.values():
        lm.forward = (lambda f: lambda ids, **kw: widths_fed.append(len(ids)) or f(ids, **kw))(lm.forward)
    rng = random.Random(7)
    chooser = BanditChooser(RandomArm(len(engine.arms)))
    chooser.select = lambda ctx: rng.randrange(len(engine.arms) - 1) if rng.random() < 0.1 else len(engine.arms) - 1
    prompt = [3, 4, 5, 6, 3, 4]
    engine.eos_ids = set()
    gen = engine.generate(prompt, 700, chooser)
    assert len(gen.rounds) >= 200
    assert gen.tokens == reference(models["target"], prompt, 700, eos=None)
    assert max(widths_fed) > 16  # drafters that sat out caught up in several chunks


def test_target_captures_only_verify_widths_and_drafters_pad_catch_ups_to_powers_of_two(models):
    """Start-up compiles and captures one set per width: the target gets exactly its round widths
    (1..γmax+1), a drafter model on CUDA single steps plus power-of-two catch-ups, on a CPU (nothing
    captured) every width exactly; decoding stays exact with the padded widths too."""
    assert catch_up_widths() == (1, 2, 4, 8, 16, 32) and catch_up_widths(graphs=False) == tuple(range(1, 33))
    engine = make_engine(models, fast=True, max_len=200)
    assert engine.target.widths == tuple(range(1, engine.max_block + 1))
    assert [lm.widths for lm in engine.lms.values()] == [catch_up_widths(graphs=False)] * len(engine.lms)
    for lm in engine.lms.values():
        lm.widths, lm._base = catch_up_widths(), {w: torch.arange(w) for w in catch_up_widths()}
    rng = random.Random(3)
    chooser = BanditChooser(RandomArm(len(engine.arms)))
    chooser.select = lambda ctx: rng.randrange(len(engine.arms))
    prompt = [3, 4, 5, 6, 3, 4]
    gen = engine.generate(prompt, 120, chooser)
    assert gen.tokens == reference(models["target"], prompt, 120)


@FAST
def test_full_feedback_scores_idle_arms_and_stays_lossless(models, fast):
    engine = make_engine(models, full_feedback=True, fast=fast, max_len=64)
    chooser = BanditChooser(RandomArm(len(engine.arms), seed=1))
    gen = engine.generate([4, 5, 6, 4, 5], 20, chooser)
    assert gen.tokens == reference(models["target"], [4, 5, 6, 4, 5], 20)
    scored = [r for r in gen.rounds if r.idle]
    assert scored and all(len(r.idle) == len(engine.arms) - 1 for r in scored)
    copy_scores = [r.idle[0] for r in scored if 0 in r.idle]
    assert copy_scores and all(s.divergence == 1.0 and s.accepted == s.drafted for s in copy_scores)  # exact copy
    assert min(s.divergence for r in scored for s in r.idle.values()) < 1.0  # others do not agree everywhere


@pytest.mark.parametrize(
    "prompt,n,match",
    [([], 5, "empty"), (list(range(2, 30)) * 40, 5, "context"), ([3, 4], 0, "max_new_tokens")],
)
def test_bad_requests_give_one_clear_error(models, prompt, n, match):
    engine = make_engine(models)
    with pytest.raises(UserError, match=match):
        engine.generate(prompt, n, BanditChooser(RandomArm(4)))


def test_early_stop_drafts_fewer_tokens_and_stays_lossless(models):
    plain = make_engine(models)
    early = make_engine(models, early_stop=0.9)
    prompt = [7, 8, 9, 10]
    chooser = BanditChooser(RandomArm(len(plain.arms), seed=5))
    a = plain.generate(prompt, 30, chooser)
    b = early.generate(prompt, 30, BanditChooser(RandomArm(len(plain.arms), seed=5)))
    assert b.tokens == a.tokens == reference(models["target"], prompt, 30)
    drafted = lambda g: sum(r.drafted for r in g.rounds if r.arm_name != "ngram")  # noqa: E731
    assert drafted(b) / len(b.rounds) < drafted(a) / len(a.rounds)


def test_drafter_with_too_small_a_vocabulary_is_refused():
    from metasd_train.models.tokenizers import check_vocab

    check_vocab(V, V + 8, "bigger drafter", tokenizer_size=V)  # bigger is fine: logits are cut
    with pytest.raises(UserError, match="has 28 output tokens but the target's tokenizer has 32"):
        check_vocab(V, V - 4, "small drafter", tokenizer_size=V)


def test_static_lm_logits_equal_a_full_forward_across_spans_and_rewinds(models):
    """Chunks of every width, crossing the attended spans (4, 8, 16, ...); after each rewind other
    tokens are fed than before (a rejection), so a stale slot would change the logits."""
    from metasd_train.decoding.static_cache import StaticLM

    target = models["target"]
    lm = StaticLM(target, V, max_len=60, widths=(1, 2, 3, 5, 8))
    lm.spans = (4, 8, 16, 32, lm.spans[-1])
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(1)
    seq, rewinds = [], 0
    while lm.seen < 50:
        n = rng.choice([1, 2, 3, 4, 5, 7, 12])
        start = lm.seen
        new = torch.randint(2, V, (n,), generator=gen)
        seq = seq[:start] + new.tolist()
        got = lm.forward(new)
        full = target(torch.tensor([seq])).logits[0]
        torch.testing.assert_close(got, full[start : start + n], rtol=1e-4, atol=1e-4)
        if rng.random() < 0.5:
            lm.rewind(start + rng.randrange(n))  # a rejection: what follows differs from what was there
            rewinds += 1
    assert rewinds >= 3


@pytest.mark.parametrize("max_len", [3, 16, 64])
def test_warmup_requests_fit_any_max_len_and_keep_the_output_exact(models, max_len):
    engine = make_engine(models, fast=True, max_len=max_len)
    engine.warmup()  # a request per arm, shortened to fit the cache; EOS does not end them
    assert "first requests" in engine.warmup_profile and engine.eos_ids == {1}
    prompt = [3, 4, 5, 3, 4][: max_len - 1]
    n = max_len - len(prompt)
    assert engine.generate(prompt, n, BanditChooser(RandomArm(len(engine.arms), seed=1))).tokens == reference(
        models["target"], prompt, n
    )


def test_request_seconds_leave_out_the_callers_on_tokens(models):
    engine, slept = make_engine(models), []

    def slow_printer(new):  # each call sleeps longer than a whole tiny request takes on a busy CPU
        time.sleep(0.15)
        slept.append(0.15)

    gen = engine.generate([3, 4, 5, 6], 16, BanditChooser(RandomArm(len(engine.arms), seed=2)), on_tokens=slow_printer)
    assert len(slept) == len(gen.rounds) and gen.seconds < sum(slept)  # the printer's time is not the request's
