"""Several processes, one per device, running the same pipeline (single node or many).

`trainer.devices` / `trainer.num_nodes` above 1 start the processes before the first stage through
Lightning Fabric's launcher (it re-runs this command once per extra local rank, or joins the
processes torchrun or SLURM started), so the data and log_acceptance stages shard their prompts
across ranks, and distillation reuses the same process group through lightning.Trainer. Work is
split into chunks dealt round-robin to ranks and gathered back in chunk order: the merged result
is the same list, in the same order, for any number of ranks. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_zero() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def processes(trainer_cfg) -> int:
    """How many processes `trainer.devices` x `trainer.num_nodes` asks for (1 for 'auto' or one device)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str):
        devices = len(devices.split(",")) if "," in devices else int(devices) if devices.isdigit() else 1
    elif not isinstance(devices, int):
        devices = len(devices)
    return max(devices, 1) * int(trainer_cfg.get("num_nodes", 1) or 1)


def launch(trainer_cfg) -> None:
    """Start (or join) the ranks now when the trainer config asks for several processes."""
    if processes(trainer_cfg) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    from lightning.fabric import Fabric

    fabric = Fabric(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=trainer_cfg.get("devices", 1),
        num_nodes=int(trainer_cfg.get("num_nodes", 1) or 1),
        strategy="ddp",
    )
    fabric.launch()
    os.environ.setdefault("LOCAL_RANK", str(fabric.local_rank))  # lightning.Trainer then joins, never relaunches
    os.environ.setdefault("NODE_RANK", str(fabric.node_rank))


def broadcast(value):
    """Rank 0's value on every rank."""
    if world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def map_sharded(fn: Callable[[int, list], list], items: Sequence, chunk: int = 1, on_done=None) -> list:
    """[*fn(0, items[0:chunk]), *fn(1, items[chunk:2*chunk]), ...] with chunks dealt round-robin to ranks."""
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    mine = {}
    for i in range(rank(), len(chunks), world()):
        mine[i] = fn(i, chunks[i])
        if on_done:
            on_done(len(chunks[i]))
    if world() > 1:
        parts = [None] * world()
        dist.all_gather_object(parts, mine)
        mine = {i: out for part in parts for i, out in part.items()}
    return [r for i in range(len(chunks)) for r in mine[i]]
