"""Length-grouped training batches: every example once per epoch, little padding, one batch per rank."""

import random

import datasets
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

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


def test_each_rank_gets_one_similar_length_batch_through_lightnings_wrapper():
    lengths, batch, world = _lengths(256), 8, 2
    sampler = LengthGroupedSampler(lengths, batch, groups=4, seed=0, world=world)
    whole = list(sampler)
    ranks = [list(DistributedSamplerWrapper(sampler, num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    assert sorted(ranks[0] + ranks[1]) == list(range(256))
    for k in range(0, 128, batch):  # rank r's k-th batch comes from the same global batch of batch x world
        chunk = set(whole[2 * k : 2 * k + batch * world])
        assert set(ranks[0][k : k + batch]) | set(ranks[1][k : k + batch]) == chunk


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
