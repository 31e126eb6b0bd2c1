"""Tokenizer compatibility with the real SmolLM2 tokenizer (read from the packaged GGUF)."""

import copy

import pytest

from metasd_train.errors import UserError
from metasd_train.models import check_tokenizers, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


def test_same_tokenizer_passes(tok):
    check_tokenizers(tok, copy.deepcopy(tok))


def test_a_tokenizer_that_splits_differently_is_refused_with_one_line(tok):
    other = copy.deepcopy(tok)
    other.add_tokens(["Hello, world"])  # a drafter trained with an extended vocabulary
    with pytest.raises(UserError, match="tokenizer does not match the target's") as e:
        check_tokenizers(tok, other, "drafter X")
    assert "\n" not in str(e.value)
