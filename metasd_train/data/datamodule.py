"""LightningDataModule over the self-distillation examples: prompt + response, loss on the response."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader


def to_example(row: dict) -> dict:
    ids = row["prompt_ids"] + row["response_ids"]
    # position i predicts token i+1: the response is predicted from positions len(prompt)-1 .. len(ids)-2
    mask = [0] * (len(row["prompt_ids"]) - 1) + [1] * len(row["response_ids"]) + [0]
    return {"input_ids": ids, "loss_mask": mask}


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
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask}


class DistillDataModule(L.LightningDataModule):
    """Train on `domains` (all by default); validate per domain, one dataloader each."""

    def __init__(self, examples, domains: list[str], batch_size: int, pad_id: int, seed: int = 0):
        super().__init__()
        self.examples, self.domains = examples, list(domains)
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed

    def _rows(self, split: str, domains: list[str]) -> list[dict]:
        ds = self.examples.filter(lambda r: r["split"] == split and r["domain"] in domains)
        return [to_example(r) for r in ds if r["response_ids"]]

    def train_dataloader(self):
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._rows("train", self.domains),
            batch_size=self.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=lambda b: collate(b, self.pad_id),
        )

    def val_dataloader(self):
        return [
            DataLoader(self._rows("val", [d]), batch_size=self.batch_size, collate_fn=lambda b: collate(b, self.pad_id))
            for d in self.val_domains
        ]

    @property
    def val_domains(self) -> list[str]:
        return sorted(set(self.examples["domain"]))
