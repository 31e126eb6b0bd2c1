"""Attention backend choices for work whose shapes change from call to call (training, batched generation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def no_cudnn_attention() -> Iterator[None]:
    """SDPA without its cuDNN backend inside the block (flash, memory-efficient and math stay as set).

    torch's CUDA builds with cuDNN newer than 9.15 (e.g. 2.11+cu130) try cuDNN first on H100/B200,
    and cuDNN builds an execution plan on the host for every new (batch, length, mask) shape,
    forward and backward apart, while the GPU idles (bench/results/h100-distillstep/).
    Distillation batches are padded to their longest sequence, so most steps bring new shapes (a
    head step: the teacher's forward plus `ttt_steps` key lengths, forward and backward), and HF
    `generate` on a dynamic cache brings a new key length every token; the other kernels plan
    nothing per shape. Backward runs the kernel its forward chose: wrap the forward. The engine's
    prefill (eager, any prompt length) runs without it too; its captured graphs keep torch's order.
    """
    enabled = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(enabled)
