"""The acceptance log: one row per round of every arm on every held-out prompt (full information)."""

from __future__ import annotations

import datasets

from metasd_train.decoding.engine import Generation

COLUMNS = ("request", "domain", "round", "arm", "arm_name", "drafted", "accepted", "divergence", "efficiency",
           "throughput", "t_draft", "t_verify", "t_round")


def rows_of(gen: Generation, request: int, domain: str, arm: int) -> list[dict]:
    feats = [] if gen.features is None else gen.features.float().tolist()
    out = []
    for r in gen.rounds:
        row = {c: getattr(r, c) for c in COLUMNS if hasattr(r, c)}
        row.update(request=request, domain=domain, arm=arm, features=feats)
        out.append(row)
    return out


def to_dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)
