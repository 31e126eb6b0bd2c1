"""Length-grouped training batches: every example once per epoch, little padding, one batch per rank."""

import random

import datasets
import pytest
import torch
from torch.utils.data import DistributedSampler

from metasd_train.data.datamodule import DistillDataModule, LengthGroupedSampler, collate


def _lengths(n=203, seed=0):
    rng = random.Random(seed)
    return [rng.randint(10, 600) for _ in range(n)]


def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_each_epoch_is_a_permutation_with_less_padding_and_new_order():
    lengths, batch = _lengths(), 8
    sampler = LengthGroupedSampler(lengths, batch, groups=5, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths)))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(len(lengths))) and second != first
    grouped = [first[k : k + batch] for k in range(0, len(first), batch)]
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1)).tolist()
    plain = [shuffled[k : k + batch] for k in range(0, len(shuffled), batch)]
    assert _padding(grouped, lengths) < 0.3 * _padding(plain, lengths)
    # the one short batch (203 = 25 x 8 + 3) comes last
    assert [len(b) for b in grouped] == [batch] * 25 + [3]


@pytest.mark.parametrize("n", [256, 203])
def test_each_rank_takes_its_part_of_every_global_batch(n):
    """Under DDP each rank's k-th batch is its slice of the k-th global batch (so the ranks' batches are
    of similar lengths), every index is taken, and the ranks take the same number of steps."""
    lengths, batch, world = _lengths(n), 8, 2
    ranks = [LengthGroupedSampler(lengths, batch, groups=4, seed=0, world=world, rank=r) for r in range(world)]
    whole = ranks[0].global_batches()
    streams = [list(s) for s in ranks]
    assert [len(s) for s in streams] == [len(ranks[0])] * world
    assert set(streams[0]) | set(streams[1]) == set(range(n))
    for k, global_batch in enumerate(whole):
        share = len(global_batch) // world
        parts = [s[k * batch : k * batch + share] for s in streams]
        assert parts[0] + parts[1] == global_batch


def test_lightning_keeps_the_sampler_under_ddp():
    """Lightning replaces a sampler under DDP unless it is a DistributedSampler (data_connector's
    _requires_distributed_sampler); its replacement would shuffle the global batches apart."""
    assert isinstance(LengthGroupedSampler([5, 6], 1, 1, world=2, rank=1), DistributedSampler)


def _examples(lengths):
    rows = [
        {"prompt_ids": [1] * 3, "response_ids": [2] * (n - 3), "split": s, "domain": "d"}
        for n, s in zip(lengths, ["train", "val"] * (len(lengths) // 2))
    ]
    return datasets.Dataset.from_list(rows)


def test_datamodule_groups_training_batches_and_sorts_validation():
    lengths = _lengths(64, seed=3)
    grouped = DistillDataModule(_examples(lengths), ["d"], 4, 0, seed=0, length_groups=50)
    plain = DistillDataModule(_examples(lengths), ["d"], 4, 0, seed=0, length_groups=0)
    for dm in (grouped, plain):
        dm.trainer = None

    def pad(dl):
        return sum(int((b["attention_mask"] == 0).sum()) for b in dl)

    assert pad(grouped.train_dataloader()) < pad(plain.train_dataloader())
    assert sum(len(b["input_ids"]) for b in grouped.train_dataloader()) == 32
    val = [b["attention_mask"].sum(1).tolist() for b in grouped.val_dataloader()[0]]
    flat = [n for b in val for n in b]
    assert flat == sorted(flat)


def test_collate_pads_to_the_longest():
    batch = collate([{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 0]}, {"input_ids": [5], "loss_mask": [0]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
