"""Graph-captured fast head steps (decoding/fasthead.py under HeadRuntime) equal eager ones (skipped without a GPU)."""

import pytest
import torch

from metasd_train.decoding.head_arm import HeadRuntime
from metasd_train.models.draft_vocab import draft_vocab
from metasd_train.models.head import DraftHead, HeadConfig
from metasd_train.models.random_init import tiny_llama, tiny_qwen2

pytestmark = pytest.mark.gpu
V, K, CAPACITY = 64, 24, 64
TARGETS = {
    "llama": lambda: tiny_llama(V, layers=6, hidden=32),
    "qwen2": lambda: tiny_qwen2(V, 6, 48, num_attention_heads=4, num_key_value_heads=2),  # q/k/v biases
}


@pytest.fixture(scope="module", params=list(TARGETS))
def head(request):
    head = DraftHead(HeadConfig.from_target(TARGETS[request.param]().config, K)).eval()
    head.set_vocab(*draft_vocab(torch.arange(V).flip(0), K))
    return head.to("cuda")


def runtime(head, graphs: bool, fast: bool, compile: str = "none") -> HeadRuntime:
    embed = torch.nn.Embedding(V, head.config.hidden_size).to("cuda")
    torch.nn.init.normal_(embed.weight, generator=torch.Generator("cuda").manual_seed(0))
    rt = HeadRuntime(head, embed, None, CAPACITY, graphs, gamma=4, fast=fast, compile=compile)
    rt.spans = (16, 32, rt.spans[-1])  # a request crosses spans: one graph per (width, span)
    return rt


@torch.inference_mode()
def drafts(rt: HeadRuntime, head, features, ids):
    """Catch-up in uneven chunks (padded widths), then a 4-token chain from every fed position."""
    outs, start = [], 0
    for n in (3, 1, 6, 19, 11):
        outs.append(rt.run(head.fuse(features[start : start + n]), ids[start : start + n], start))
        start += n
    out, logits = torch.cat([o for o, _ in outs]), torch.cat([lg for _, lg in outs])
    chains = [rt.chain(out[p : p + 1], logits[p : p + 1], p + 1, 4).tolist() for p in range(start)]
    return out, logits, chains


@pytest.mark.parametrize("compile", ["none", "fused", "static", "layer"])
def test_graphed_fast_steps_equal_eager_steps(head, compile):
    gen = torch.Generator("cuda").manual_seed(1)
    features = torch.randn(40, 3 * head.config.hidden_size, device="cuda", generator=gen)
    ids = torch.randint(0, V, (40,), device="cuda", generator=gen)
    graphed = drafts(runtime(head, graphs=True, fast=True, compile=compile), head, features, ids)
    eager = drafts(runtime(head, graphs=False, fast=True, compile=compile), head, features, ids)
    reference = drafts(runtime(head, graphs=False, fast=False), head, features, ids)  # DraftHead.step
    torch.testing.assert_close(graphed[:2], eager[:2], rtol=0, atol=0)  # same kernels with and without capture
    assert graphed[2] == eager[2]
    torch.testing.assert_close(graphed[:2], reference[:2], rtol=1e-4, atol=1e-4)
    assert graphed[2] == reference[2]


@pytest.mark.parametrize("compile", ["none", "fused", "static"])
@torch.inference_mode()
def test_a_graphed_sampled_chain_equals_the_eager_one_on_the_same_noise(head, compile):
    from metasd_train.decoding.sampling import SamplingParams

    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    gen = torch.Generator("cuda").manual_seed(2)
    features = torch.randn(20, 3 * head.config.hidden_size, device="cuda", generator=gen)
    ids = torch.randint(0, V, (20,), device="cuda", generator=gen)
    results = []
    for graphs in (True, False):
        rt = runtime(head, graphs=graphs, fast=True, compile=compile)
        out, logits = rt.run(head.fuse(features), ids, 0)
        results.append(rt.sampled_chain(out[-1:], logits[-1:], 20, 4, params, torch.Generator("cuda").manual_seed(3)))
    assert results[0][0].tolist() == results[1][0].tolist()
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_chained_step_timing_on_a_runtime_captured_under_inference_mode(head):
    """The bench times a link of the engine's chain after the engine warmed up under inference mode
    (its buffers are inference tensors), from outside inference mode."""
    from bench.headstep import chained_step_ms

    embed = torch.nn.Embedding(V, head.config.hidden_size).to("cuda")
    rt = HeadRuntime(head, embed, None, 512, True, gamma=4, fast=True, compile="fused")  # spans reach fastpath.AT
    gen = torch.Generator("cuda").manual_seed(1)
    features = torch.randn(40, 3 * head.config.hidden_size, device="cuda", generator=gen)
    drafts(rt, head, features, torch.randint(0, V, (40,), device="cuda", generator=gen))
    assert chained_step_ms(rt, 4, reps=5) > 0
