"""Command options arrive as typed: text is never YAML-parsed, numbers and booleans are checked."""

import pytest

from metasd_train.cli.decode import parse_args
from metasd_train.errors import UserError


@pytest.mark.parametrize(
    "text", ["yes", "off", "1e3", "# Title", "[1, 2] reversed", "a: b: c", "Question: why?", "null"]
)
def test_prompt_text_arrives_as_typed(text):
    assert parse_args(["run=x", f"prompt={text}"]).prompt == text


@pytest.mark.parametrize(
    "arg,match",
    [
        ("temperature=1e-45", "temperature"),
        ("temperature=nan", "temperature"),
        ("max_new_tokens=1e3", "not a valid int"),
        ("fast=maybe", "not a boolean"),
        ("colour=red", "bad option"),
    ],
)
def test_bad_values_are_one_clear_error(arg, match):
    with pytest.raises(UserError, match=match):
        parse_args(["run=x", "prompt=hi", arg])


def test_run_is_required_and_empty_prompt_refused():
    with pytest.raises(UserError, match="run=... is required"):
        parse_args(["prompt=hi"])
    with pytest.raises(UserError, match="empty"):
        parse_args(["run=x", "prompt="])
