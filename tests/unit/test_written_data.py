"""data.written: training examples whose responses come with the source, never a domain's prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metasd_train.data import sources
from metasd_train.data.prompts import written_examples
from metasd_train.data.registry import SOURCES
from metasd_train.errors import UserError


class CharTokenizer:
    """One id per character; no chat template (chat_ids joins the turns with newlines)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 97 + 2 for c in text]}


@pytest.fixture
def pairs(monkeypatch):
    records = [{"id": str(i), "prompt": f"question number {i}", "response": "ab" * i} for i in range(1, 9)]
    monkeypatch.setitem(SOURCES, "pairs", lambda options: iter(records))
    return records


def test_written_examples_skip_taken_prompts_cut_long_answers_and_end_short_ones_with_eos(pairs):
    taken = {"question number 2", "question number 5"}
    rows = written_examples({"chat": {"source": "pairs", "n": 5}}, CharTokenizer(), 64, 8, 1, taken, seed=0)
    assert len(rows) == 5
    assert not {r["prompt"] for r in rows} & taken
    assert len({r["prompt"] for r in rows}) == 5
    for r in rows:
        assert (r["domain"], r["split"], r["kind"]) == ("chat", "train", "written")
        answer = CharTokenizer()(dict((p["prompt"], p["response"]) for p in pairs)[r["prompt"]])["input_ids"]
        assert r["response_ids"] == (answer[:8] if len(answer) >= 8 else [*answer, 1])
        assert r["prompt_ids"] == CharTokenizer()(r["prompt"] + "\n")["input_ids"]


def test_written_examples_respect_the_prompt_length_limit(pairs):
    rows = written_examples({"chat": {"source": "pairs", "n": 8}}, CharTokenizer(), 5, 8, 1, set(), seed=0)
    assert rows == []  # every prompt is longer than 5 tokens


def test_a_source_without_responses_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(SOURCES, "bare", lambda options: iter([{"id": "1", "prompt": "a prompt"}]))
    with pytest.raises(UserError, match="data.written.chat: source 'bare' ships no responses"):
        written_examples({"chat": {"source": "bare", "n": 1}}, CharTokenizer(), 64, 8, 1, set(), seed=0)


def test_sharegpt_answers_option_yields_the_first_assistant_reply(tmp_path, monkeypatch):
    conversations = [
        {"id": "a", "conversations": [{"from": "human", "value": "x" * 20}, {"from": "gpt", "value": "the reply"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "y" * 20}]},  # no reply: not a written example
        {"id": "c", "conversations": [{"from": "human", "value": "z" * 20}, {"from": "human", "value": "again"}]},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(conversations))
    monkeypatch.setattr(sources, "package_file", lambda *a, **k: Path(path))
    plain = list(sources.load_source("sharegpt", {}))
    assert [r["id"] for r in plain] == ["a", "b", "c"] and all("response" not in r for r in plain)
    answered = list(sources.load_source("sharegpt", {"answers": True}))
    assert answered == [{"id": "a", "prompt": "x" * 20, "response": "the reply"}]


def test_the_draft_vocabulary_counts_only_the_targets_own_answers(monkeypatch):
    import datasets
    import torch
    from omegaconf import OmegaConf

    from metasd_train.models import draft_vocab, drafters
    from metasd_train.models.random_init import tiny_llama

    seen = []
    real = draft_vocab.token_counts
    monkeypatch.setattr(draft_vocab, "token_counts", lambda rows, v: seen.extend(rows) or real(rows, v))
    examples = datasets.Dataset.from_list(
        [
            {"response_ids": [5, 6], "split": "train", "kind": "greedy"},
            {"response_ids": [7, 7], "split": "train", "kind": "written"},
            {"response_ids": [8], "split": "val", "kind": "greedy"},
        ]
    )
    d = OmegaConf.create({"kind": "head", "head": {"draft_vocab": 8, "feature_layers": None}})
    drafters.build_drafter(tiny_llama(32, layers=4, seed=0), d, 0, torch.device("cpu"), None, examples)
    assert seen == [[5, 6]]
