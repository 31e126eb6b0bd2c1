"""The distill modules' forwards run SDPA without its cuDNN backend (a host-side plan per new padded
length on H100) and leave the backend flags as they found them."""

import pytest
import torch

from metasd_train.data.datamodule import collate, to_example
from metasd_train.distill.head_module import HeadDistillModule
from metasd_train.distill.module import DistillModule
from metasd_train.models.draft_vocab import token_counts
from metasd_train.models.head import build_head
from metasd_train.models.random_init import tiny_llama

VOCAB = 32

pytestmark = pytest.mark.usefixtures("one_thread")


def batch():
    g = torch.Generator().manual_seed(0)
    rows = [{"prompt_ids": [5, 6, 7], "response_ids": torch.randint(2, VOCAB, (4 + i,), generator=g).tolist()}
            for i in range(3)]  # fmt: skip
    return collate([to_example(r) for r in rows], pad_id=1)


def head_module(teacher):
    head = build_head(teacher, 24, token_counts([list(range(VOCAB))], VOCAB), eos_ids=[1])
    return HeadDistillModule(head, teacher, ["all"], ttt_steps=3)


def model_module(teacher):
    return DistillModule(tiny_llama(vocab_size=VOCAB, layers=1, seed=1), teacher, ["all"])


FORWARDS = [(head_module, "_unroll", 4 + 3), (model_module, "_logits", 4 + 1)]  # calls: teacher layers + drafter's


@pytest.mark.parametrize("make, forward, calls", FORWARDS)
@pytest.mark.parametrize("before", [True, False])
def test_forwards_attend_without_cudnn_and_restore_the_flag(monkeypatch, make, forward, calls, before):
    module, seen = make(tiny_llama(vocab_size=VOCAB, layers=4)), []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    initial = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(before)
    try:
        getattr(module, forward)(batch())  # what training_step and validation_step run
        after = torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(initial)
    assert seen == [False] * calls and after == before
