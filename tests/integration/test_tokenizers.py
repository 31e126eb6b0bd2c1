"""Tokenizer compatibility with the real SmolLM2 tokenizer (read from the packaged GGUF)."""

import copy

import pytest

from metasd_train.errors import UserError
from metasd_train.models import check_tokenizers, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


def test_the_same_tokenizer_passes_also_after_a_save_and_reload(tok, tmp_path):
    """What an export does to a drafter's tokenizer; the probes still split alike, specials agree."""
    from transformers import AutoTokenizer

    from metasd_train.models.tokenizers import PROBES

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert check_tokenizers(tok, again, "drafter X") is None
    assert [again(t)["input_ids"] for t in PROBES] == [tok(t)["input_ids"] for t in PROBES]
    assert (again.eos_token_id, again.bos_token_id) == (tok.eos_token_id, tok.bos_token_id) != (None, None)


def test_another_eos_token_is_refused_with_one_line(tok):
    other = copy.deepcopy(tok)
    other.eos_token = tok.convert_ids_to_tokens(tok.eos_token_id + 1)
    with pytest.raises(UserError, match="drafter X's eos_token_id differs from the target's"):
        check_tokenizers(tok, other, "drafter X")


def test_a_tokenizer_that_splits_differently_is_refused_with_one_line(tok):
    other = copy.deepcopy(tok)
    other.add_tokens(["Hello, world"])  # a drafter trained with an extended vocabulary
    with pytest.raises(UserError, match="tokenizer does not match the target's") as e:
        check_tokenizers(tok, other, "drafter X")
    assert "\n" not in str(e.value)
