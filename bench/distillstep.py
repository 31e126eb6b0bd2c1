"""Optimizer steps per second of EAGLE-3 head training on a GPU, with and without SDPA's cuDNN backend.

python -m bench.distillstep [steps=60] [batch=16] [min_len=160] [max_len=640] [draft_vocab=32768] [ttt_steps=5]
                            [profile=DIR]

A random target of Qwen2.5-1.5B's shapes (bf16), a fresh head, bf16-mixed Lightning, and sequences of
random lengths in [min_len, max_len], so batches are padded to a new length most steps, as
DistillDataModule's are. Runs `cudnn=off` (HeadDistillModule as shipped: `no_cudnn_attention`) and
`cudnn=on` (that context replaced by a no-op: torch's default backend order), each timing every step
between device syncs. Reports steps/s after 3 warm-up steps and the median step of lengths seen for
the first time vs seen before (cuDNN builds an execution plan per new shape). With `profile=DIR`, the
shipped run (cuDNN off) also runs under Lightning's PyTorchProfiler for 5 steps after 10, and its
table of operators by device time is written to DIR.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from unittest import mock

import lightning as L
import torch
from torch.utils.data import DataLoader

from bench.shapes import QWEN25_15B
from metasd_train.cli.args import check_ranges, parse
from metasd_train.data.datamodule import collate, to_example
from metasd_train.distill import head_module
from metasd_train.errors import one_line_errors
from metasd_train.models.head import build_head
from metasd_train.models.random_init import make_config


@dataclass
class DistillStepArgs:
    steps: int = 60
    batch: int = 16
    min_len: int = 160  # tokens per sequence, prompt + response
    max_len: int = 640
    draft_vocab: int = 32768
    ttt_steps: int = 5
    profile: str = ""  # a folder for the profiler's table of the cuDNN-off run ("" = none)


class StepTimes(L.Callback):
    """(padded length, seconds) of every training step, between device syncs."""

    def __init__(self):
        self.rows, self.start = [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.rows.append((batch["input_ids"].shape[1], time.perf_counter() - self.start))


def examples(args: DistillStepArgs, vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.steps * args.batch,), generator=g).tolist()
    ids = [torch.randint(2, vocab, (n,), generator=g).tolist() for n in lengths]
    return [to_example({"prompt_ids": x[: len(x) // 2], "response_ids": x[len(x) // 2 :]}) for x in ids]


def profiler(folder: str):
    """Lightning's PyTorchProfiler over steps 10..14, its table sorted by device time."""
    from lightning.pytorch.profilers import PyTorchProfiler

    schedule = torch.profiler.schedule(wait=8, warmup=2, active=5, repeat=1)
    return PyTorchProfiler(dirpath=folder, filename="distillstep", schedule=schedule,
                           sort_by_key="cuda_time_total", row_limit=60)  # fmt: skip


def run(target, args: DistillStepArgs, cudnn: bool) -> dict:
    """Fit `args.steps` steps of a fresh head; steps/s and median first-seen / seen-before step seconds."""
    vocab, gpu = target.config.vocab_size, target.device.type == "cuda"
    head = build_head(target, args.draft_vocab, torch.ones(vocab, dtype=torch.long), eos_ids=[1]).float()
    module = head_module.HeadDistillModule(head, target, ["all"], "fkl", ttt_steps=args.ttt_steps)
    loader = DataLoader(examples(args, vocab), batch_size=args.batch, collate_fn=lambda b: collate(b, 1))
    times = StepTimes()
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, precision="bf16-mixed" if gpu else "32-true",
                        max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[times],
                        profiler=profiler(args.profile) if args.profile and not cudnn else None)  # fmt: skip
    patch = mock.patch.object(head_module, "no_cudnn_attention", contextlib.nullcontext) if cudnn else None
    with patch or contextlib.nullcontext():
        trainer.fit(module, loader)
    seen, first, again = set(), [], []
    for width, seconds in times.rows:
        (again if width in seen else first).append(seconds)
        seen.add(width)
    timed = [s for _, s in times.rows[3:]]
    return {"cudnn": cudnn, "steps_per_s": round(len(timed) / sum(timed), 3), "lengths": len(seen),
            "first_seen_ms": round(1000 * statistics.median(first)),
            "seen_before_ms": round(1000 * statistics.median(again)) if again else None}  # fmt: skip


def main(argv: list[str]) -> None:
    args = parse(DistillStepArgs, argv)
    check_ranges(args, [("steps", lambda v: v > 3, "> 3"), ("min_len", lambda v: 2 <= v <= args.max_len, "2..max_len")])
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):  # initialised on the GPU: seconds, not minutes
        target = Qwen2ForCausalLM(make_config(QWEN25_15B, "qwen2")).to(torch.bfloat16).eval()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    for cudnn in (False, True):
        print(run(target, args, cudnn), flush=True)


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
