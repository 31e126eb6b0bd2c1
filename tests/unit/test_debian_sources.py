"""Debian prompt sources: deb822 description parsing, FAQ question extraction, clear errors."""

import pytest

from metasd_train.data import debian
from metasd_train.errors import UserError

STANZAS = """Package: alpha
Description-md5: 0123
Description-de: Ein Werkzeug
 Erste Zeile der langen Beschreibung.
 .
 Zweiter Absatz.

Package: beta
Description-md5: 4567
Description-en: A tool
 Only English here.
"""

TOC = """1. Basics
    1.1. What is this?
    1.2. How does a very long question wrap onto the
    next line of the table of contents?
    1.3. A heading that asks nothing
2. More
    2.1. What is this?
"""


def test_descriptions_parse_synopsis_paragraphs_and_language():
    de = list(debian.descriptions(STANZAS, "de"))
    assert de == [
        {
            "package": "alpha",
            "md5": "0123",
            "synopsis": "Ein Werkzeug",
            "long": "Erste Zeile der langen Beschreibung.\n\nZweiter Absatz.",
        }
    ]
    assert [d["package"] for d in debian.descriptions(STANZAS, "en")] == ["beta"]


def test_faq_questions_join_wrapped_lines_and_skip_repeats():
    assert debian.faq_questions(TOC) == [
        "What is this?",
        "How does a very long question wrap onto the next line of the table of contents?",
    ]


def test_missing_files_name_the_command_that_installs_them(tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "APT_LISTS", tmp_path)
    with pytest.raises(UserError, match="apt-get update -o Acquire::Languages=fr,en"):
        debian.translation_text("fr")
    monkeypatch.setattr(debian, "FAQ", tmp_path / "missing.txt.gz")
    with pytest.raises(UserError, match="apt-get install debian-faq"):
        next(debian.debian_faq({}))
