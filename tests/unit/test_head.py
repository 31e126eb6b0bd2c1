"""EAGLE-3 draft head: decoding on a static cache, training-time test vs decoding, draft vocab, export."""

import json
from types import SimpleNamespace

import pytest
import torch

from metasd_train.errors import UserError
from metasd_train.models.draft_vocab import draft_vocab, token_counts
from metasd_train.models.head import DraftHead, HeadConfig
from metasd_train.models.head_io import WEIGHTS, expected_shapes, load_head, save_head
from metasd_train.models.head_layer import RMSNorm, attend, rope
from metasd_train.models.random_init import tiny_llama
from metasd_train.models.random_init import tiny_qwen2 as random_qwen2


def tiny_qwen2():
    """Qwen2 has q/k/v biases and no `attention_bias` key; GQA 4 heads over 2."""
    return random_qwen2(48, 6, 32, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


pytestmark = pytest.mark.usefixtures("one_thread")


TARGETS = {"llama": lambda: tiny_llama(vocab_size=40, layers=6, hidden=32), "qwen2": tiny_qwen2}


def make_head(kind: str, k: int = 16) -> DraftHead:
    target = TARGETS[kind]()
    head = DraftHead(HeadConfig.from_target(target.config, k)).eval()  # default init: large, varied outputs
    d2t, t2d = draft_vocab(torch.arange(target.config.vocab_size).flip(0), k)
    head.set_vocab(d2t, t2d)
    return head


def inputs(head: DraftHead, *shape):
    d = head.config.hidden_size
    return torch.randn(*shape, 3 * d), torch.randn(*shape, d)


# ---------------------------------------------------------------- config


def test_config_from_llama_and_qwen2_targets():
    llama = HeadConfig.from_target(tiny_llama(layers=6).config, 8)
    assert llama.feature_layers == (2, 3, 4) and not llama.attention_bias
    assert (llama.num_attention_heads, llama.num_key_value_heads, llama.head_dim) == (4, 2, 8)
    qwen = HeadConfig.from_target(tiny_qwen2().config, 8, feature_layers=(1, 3, 6))
    assert qwen.attention_bias and qwen.feature_layers == (1, 3, 6)
    assert not HeadConfig.from_target(tiny_qwen2().config, 8, attention_bias=False).attention_bias
    old_style = SimpleNamespace(**{**vars(tiny_llama(layers=6).config), "rope_theta": 5e5, "rope_parameters": None})
    assert HeadConfig.from_target(old_style, 8).rope_theta == 5e5  # transformers < 5 kept rope_theta
    with pytest.raises(UserError, match="out of range"):
        HeadConfig.from_target(tiny_llama(layers=6).config, 8, feature_layers=(0, 3, 6))
    with pytest.raises(UserError, match="RoPE type 'linear'"):
        HeadConfig.from_target(tiny_llama(rope_parameters={"rope_type": "linear", "factor": 2.0}).config, 8)


def test_rmsnorm_and_rope_match_hf_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    ours, theirs = RMSNorm(16, 1e-6), LlamaRMSNorm(16, 1e-6)
    torch.nn.init.normal_(ours.weight)
    theirs.weight.data.copy_(ours.weight.data)
    torch.testing.assert_close(ours.to(torch.bfloat16)(x), theirs.to(torch.bfloat16)(x), rtol=0, atol=0)
    cfg = tiny_llama(hidden=32).config
    positions = torch.tensor([0, 3, 7, 100])
    cos, sin = LlamaRotaryEmbedding(cfg)(x.float(), positions[None])
    ours_cos, ours_sin = rope(positions, 8, 10000.0, torch.float32)
    torch.testing.assert_close(ours_cos, cos[0]), torch.testing.assert_close(ours_sin, sin[0])
    q = torch.randn(1, 4, 4, 8)
    expected, _ = apply_rotary_pos_emb(q, q, cos, sin)
    from metasd_train.models.head_layer import _rotate

    torch.testing.assert_close(_rotate(q, ours_cos, ours_sin), expected)


def test_grouped_attention_matches_hf_eager():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)  # 4 query heads, 2 kv
    mask = torch.rand(5, 7) < 0.7
    mask[:, 0] = True
    additive = torch.zeros(1, 1, 5, 7).masked_fill(~mask, float("-inf"))
    module = SimpleNamespace(num_key_value_groups=2, training=False)
    expected, _ = eager_attention_forward(module, q, k, v, additive, scaling=8**-0.5)
    torch.testing.assert_close(attend(q, k, v, mask).transpose(1, 2), expected)


# ---------------------------------------------------------------- decoding on the static cache


def run_steps(head, features, embeds, chunks, max_len=16):
    cache, outs, logits, start = head.new_cache(max_len), [], [], 0
    for n in chunks:
        pos = torch.arange(start, start + n)
        o, lg = head.step(head.fuse(features[pos]), embeds[pos], pos, cache, span=max_len)
        outs.append(o), logits.append(lg)
        start += n
    return torch.cat(outs), torch.cat(logits)


@pytest.mark.parametrize("kind", TARGETS)
@torch.no_grad()
def test_step_in_one_call_equals_position_by_position_and_chunks(kind):
    head = make_head(kind)
    features, embeds = inputs(head, 9)
    whole = run_steps(head, features, embeds, [9])
    for chunks in ([1] * 9, [3, 4, 2]):
        for a, b in zip(whole, run_steps(head, features, embeds, chunks)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_stale_slots_are_masked_so_a_rewind_needs_no_rollback():
    head = make_head("qwen2")
    features, embeds = inputs(head, 9)
    cache = head.new_cache(16)
    pos = torch.arange(9)
    _, clean = head.step(head.fuse(features), embeds, pos, cache, span=16)
    junk = torch.arange(6, 14)  # rejected drafts overwrite slots 6..13
    head.step(100 * torch.randn(8, 32), 100 * torch.randn(8, 32), junk, cache, span=16)
    _, again = head.step(head.fuse(features[6:]), embeds[6:], pos[6:], cache, span=16)  # re-feed 6..8
    torch.testing.assert_close(again, clean[6:], rtol=1e-5, atol=1e-5)  # 9..13 still hold junk, masked


# ---------------------------------------------------------------- training-time test == decoding


@torch.no_grad()
def chained(head, features, embeds, t, k):
    """The k-th draft at position t by the decoding API: prefill up to b = t-k+1, then chain."""
    b, cache = t - k + 1, head.new_cache(features.shape[0])
    pos = torch.arange(b + 1)
    out, _ = head.step(head.fuse(features[: b + 1]), embeds[: b + 1], pos, cache, span=features.shape[0])
    hidden = out[-1:]
    for p in range(b + 1, t + 1):
        hidden, _ = head.step(hidden, embeds[p : p + 1], torch.tensor([p]), cache, span=features.shape[0])
    return hidden[0]


@pytest.mark.parametrize("kind", TARGETS)
@torch.no_grad()
def test_ttt_unroll_equals_chained_decoding(kind):
    head, steps = make_head(kind), 4
    features, embeds = inputs(head, 2, 10)
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, 7:] = 0  # right padding in row 1
    outs = head.unroll(features, embeds, attention_mask, steps)
    for row, length in ((0, 10), (1, 7)):
        for k in range(1, steps + 1):
            for t in range(k - 1, length):
                expected = chained(head, features[row, :length], embeds[row, :length], t, k)
                torch.testing.assert_close(outs[k - 1][row, t], expected, rtol=1e-5, atol=1e-5)
    assert all(o.isfinite().all() for o in outs)  # pad rows see their own key: no NaN to poison a loss


def test_unroll_pads_do_not_leak_into_valid_rows():
    head = make_head("llama")
    features, embeds = inputs(head, 1, 6)
    short = head.unroll(features, embeds, torch.ones(1, 6), 3)
    junk_f, junk_e = inputs(head, 1, 3)
    long_mask = torch.tensor([[1] * 6 + [0] * 3])
    padded = head.unroll(torch.cat((features, junk_f), 1), torch.cat((embeds, junk_e), 1), long_mask, 3)
    for a, b in zip(short, padded):
        torch.testing.assert_close(b[:, :6], a, rtol=1e-5, atol=1e-5)


def test_full_vocab_logits_put_minus_inf_outside_the_draft_vocab():
    head = make_head("llama", k=5)
    logits = torch.randn(3, 5)
    full = head.full_vocab_logits(logits)
    ids = head.to_target(torch.arange(5))
    assert full.shape == (3, 40) and full.isinf().sum() == 3 * 35
    torch.testing.assert_close(full[:, ids], logits)
    assert torch.equal(full.argmax(-1), head.to_target(logits.argmax(-1)))


# ---------------------------------------------------------------- draft vocabulary


def test_draft_vocab_takes_the_most_frequent_ties_by_id_and_forces_eos():
    counts = token_counts([[5, 5, 5, 2, 2, 7, 7, 3], [9]], vocab_size=12)
    assert counts.tolist() == [0, 0, 2, 1, 0, 3, 0, 2, 0, 1, 0, 0]
    d2t, t2d = draft_vocab(counts, 3)
    assert (torch.arange(3) + d2t).tolist() == [2, 5, 7]  # 5 (3x), then 2 and 7 (2x)
    d2t, t2d = draft_vocab(counts, 4, always=[11])
    ids = torch.arange(4) + d2t
    assert ids.tolist() == [2, 5, 7, 11]  # eos 11 never occurs, yet is draftable; sorted by target id
    assert t2d.nonzero().squeeze(1).tolist() == ids.tolist() and t2d.sum() == 4
    assert draft_vocab(counts, 4, always=[11])[0].tolist() == d2t.tolist()  # deterministic
    with pytest.raises(UserError, match="outside the target vocabulary"):
        token_counts([[12]], vocab_size=12)
    with pytest.raises(UserError, match="do not fit"):
        draft_vocab(counts, 1, always=[0, 1])


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("kind", TARGETS)
@torch.no_grad()
def test_export_round_trip_keeps_keys_shapes_and_logits(kind, tmp_path):
    from safetensors.torch import load_file

    head = make_head(kind)
    folder = save_head(head, tmp_path / "head")
    state = load_file(str(folder / WEIGHTS))
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(head.config)
    assert any(k.endswith("q_proj.bias") for k in state) == (kind == "qwen2")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["num_hidden_layers"] == 1
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [i - 1 for i in head.config.feature_layers]
    assert (config["draft_vocab_size"], config["tie_word_embeddings"]) == (16, False)
    loaded = load_head(folder)
    assert loaded.config == head.config
    features, embeds = inputs(head, 7)
    for a, b in zip(run_steps(head, features, embeds, [7]), run_steps(loaded, features, embeds, [7])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(loaded.d2t, head.d2t) and torch.equal(loaded.t2d, head.t2d)


def test_load_head_names_the_file_when_truncated_corrupt_or_mismatched(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_head(make_head("llama"), tmp_path / "head")
    weights = folder / WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"model\.safetensors is truncated or corrupt"):
        load_head(folder)
    weights.write_bytes(good)
    state = load_file(str(weights))
    del state["midlayer.hidden_norm.weight"]
    state["norm.weight"] = torch.ones(3)
    save_file(state, str(weights))
    with pytest.raises(
        UserError, match=r"model\.safetensors.*missing \['midlayer\.hidden_norm\.weight'\].*norm\.weight"
    ):
        load_head(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(UserError, match=r"config\.json is not a draft-head config"):
        load_head(folder)
