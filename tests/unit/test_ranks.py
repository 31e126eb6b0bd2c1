"""Sharding and merging across ranks: a 2-process gloo group gives the same list as one process."""

import torch.distributed as dist
import torch.multiprocessing as mp

from metasd_train.pipeline import ranks


def work(i: int, chunk: list) -> list:
    return [(i, x * x) for x in chunk]  # the chunk index is part of the result: order must survive


def _worker(rank: int, store: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        seen = []
        result = ranks.map_sharded(work, list(range(11)), chunk=3, on_done=seen.append)
        out[rank] = (result, ranks.broadcast(f"from-{rank}"), ranks.rank(), ranks.world(), seen)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_merge_to_the_single_process_result(tmp_path):
    single = ranks.map_sharded(work, list(range(11)), chunk=3)
    assert single == [(i // 3, i * i) for i in range(11)]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2)
    for r in (0, 1):
        result, broadcast, rank, world, seen = out[r]
        assert result == single and broadcast == "from-0" and (rank, world) == (r, 2)
    assert out[0][4] == [3, 3] and out[1][4] == [3, 2]  # chunks 0, 2 on rank 0; 1, 3 on rank 1


def test_processes_counts_devices_times_nodes():
    assert ranks.processes({"devices": 1}) == 1
    assert ranks.processes({"devices": "auto"}) == 1
    assert ranks.processes({"devices": 2, "num_nodes": 2}) == 4
    assert ranks.processes({"devices": [0, 1]}) == 2
    assert ranks.processes({"devices": "0,1,2"}) == 3
