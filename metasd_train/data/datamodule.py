"""LightningDataModule over the self-distillation examples: prompt + response, loss on the response."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler


def to_example(row: dict) -> dict:
    ids = row["prompt_ids"] + row["response_ids"]
    # position i predicts token i+1: the response is predicted from positions len(prompt)-1 .. len(ids)-2
    mask = [0] * (len(row["prompt_ids"]) - 1) + [1] * len(row["response_ids"]) + [0]
    return {"input_ids": ids, "loss_mask": mask}


def loss_rows(loss_mask: torch.Tensor) -> torch.Tensor:
    """Flat indices b*T + t of the rows a draft head's loss reads: row t drafts from the teacher's
    distribution at position t+1, so the rows with loss_mask[b, t+1]."""
    # loss_mask: [B, T] -> [N] long
    return F.pad(loss_mask[:, 1:].bool(), (0, 1)).flatten().nonzero().squeeze(1)


def collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(b["loss_mask"], dtype=torch.bool)
    # the head's loss rows, found here on the CPU: on the device, nonzero would wait for the GPU every step
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask, "loss_rows": loss_rows(mask)}


class LengthGroupedSampler(DistributedSampler):
    """Training order with batches of similar lengths, so that little of a batch is padding (HF Trainer's
    `group_by_length`). Each epoch: a seeded shuffle, cut into groups of `groups` global batches (`batch`
    × `world` indices), each group sorted by length and cut into global batches, and those shuffled;
    rank r takes the r-th `batch` of every global batch. It is a DistributedSampler because Lightning
    keeps those as they are under DDP, where it would wrap any other sampler in its own shuffling one
    and undo the grouping. The one short global batch goes last, padded with its own first indices to
    a multiple of `world`, so that every rank takes the same number of steps."""

    def __init__(self, lengths: list[int], batch: int, groups: int, seed: int = 0, world: int = 1, rank: int = 0):
        super().__init__(lengths, num_replicas=world, rank=rank, shuffle=False, seed=seed)
        self.lengths, self.batch, self.groups = lengths, batch, groups

    def global_batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        step = self.batch * self.num_replicas
        span = step * self.groups
        batches = []
        for start in range(0, len(order), span):
            group = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            batches += [group[k : k + step] for k in range(0, len(group), step)]
        full = [b for b in batches if len(b) == step]
        short = [b for b in batches if len(b) < step]  # at most one: the last group's remainder
        out = [full[k] for k in torch.randperm(len(full), generator=gen).tolist()]
        for b in short:
            size = -(-len(b) // self.num_replicas) * self.num_replicas
            out.append((b * self.num_replicas)[:size])
        return out

    def __iter__(self):
        for b in self.global_batches():
            share = len(b) // self.num_replicas
            yield from b[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch * self.num_replicas)
        return full * self.batch + -(-rest // self.num_replicas)


class DistillDataModule(L.LightningDataModule):
    """Train on `domains` (all by default); validate per domain, one dataloader each. With `length_groups`
    > 0 training batches hold examples of similar lengths (LengthGroupedSampler); validation rows run
    shortest first (its metrics are token-weighted means, so the batching does not change them)."""

    def __init__(
        self, examples, domains: list[str], batch_size: int, pad_id: int, seed: int = 0, length_groups: int = 0
    ):
        super().__init__()
        self.examples, self.domains = examples, list(domains)
        self.batch_size, self.pad_id, self.seed, self.length_groups = batch_size, pad_id, seed, length_groups

    def _rows(self, split: str, domains: list[str]) -> list[dict]:
        ds = self.examples.filter(lambda r: r["split"] == split and r["domain"] in domains)
        return [to_example(r) for r in ds if r["response_ids"]]

    def train_dataloader(self):
        rows = self._rows("train", self.domains)
        if self.length_groups > 0:
            world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
            lengths = [len(r["input_ids"]) for r in rows]
            sampler = LengthGroupedSampler(lengths, self.batch_size, self.length_groups, self.seed, world, rank)
            order = {"sampler": sampler}
        else:
            order = {"shuffle": True, "generator": torch.Generator().manual_seed(self.seed)}
        return DataLoader(rows, batch_size=self.batch_size, collate_fn=lambda b: collate(b, self.pad_id), **order)

    def val_dataloader(self):
        def rows(d):
            return sorted(self._rows("val", [d]), key=lambda r: len(r["input_ids"]))

        return [
            DataLoader(rows(d), batch_size=self.batch_size, collate_fn=lambda b: collate(b, self.pad_id))
            for d in self.val_domains
        ]

    @property
    def val_domains(self) -> list[str]:
        return sorted(set(self.examples["domain"]))
