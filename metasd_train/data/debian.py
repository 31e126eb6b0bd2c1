"""Prompt sources from files a Debian system holds: package descriptions and their translations
(apt's lists folder, after `apt-get update -o Acquire::Languages=de,en`) and the Debian FAQ
(`apt-get install debian-faq`). Read at run time; nothing is copied into the repository."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from metasd_train.data.registry import source
from metasd_train.errors import UserError

# Overridable for machines without apt (e.g. a GPU box given a copy of these files).
APT_LISTS = Path(os.environ.get("METASD_APT_LISTS", "/var/lib/apt/lists"))
FAQ = Path(os.environ.get("METASD_DEBIAN_FAQ", "/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"))
LANGUAGES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "nl": "Dutch"}


def translation_text(lang: str) -> str:
    """The largest Translation-<lang> index in apt's lists folder, decompressed if apt kept it compressed."""
    files = [p for p in APT_LISTS.glob(f"*_i18n_Translation-{lang}*") if p.is_file()]
    if not files:
        raise UserError(
            f"no Debian Translation-{lang} index in {APT_LISTS}; as root run: "
            f"apt-get update -o Acquire::Languages={lang},en"
        )
    path = max(files, key=lambda p: p.stat().st_size)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    if path.suffix in (".lz4", ".xz", ".zst", ".bz2"):
        return subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
            check=True,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # like the other branches: a bad byte spoils one character, not the run
        ).stdout
    return path.read_text(encoding="utf-8", errors="replace")


def descriptions(text: str, lang: str) -> Iterator[dict]:
    """{package, md5, synopsis, long} per deb822 stanza; ' .' lines are paragraph breaks."""
    for stanza in text.split("\n\n"):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith(" ") and key:
                fields[key].append("" if line.strip() == "." else line[1:])
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = [value.strip()]
        desc = fields.get(f"Description-{lang}")
        if desc and "Package" in fields:
            yield {
                "package": fields["Package"][0],
                "md5": fields.get("Description-md5", [""])[0],
                "synopsis": desc[0],
                "long": "\n".join(desc[1:]).strip(),
            }


@source("debian_translation")
def debian_translation(options: dict) -> Iterator[dict]:
    lang = options.get("language", "de")
    name = LANGUAGES.get(lang, lang)
    for d in descriptions(translation_text(lang), lang):
        if 80 <= len(d["long"]) <= 1200:
            yield {
                "id": d["md5"],
                "prompt": f"Translate this software description from {name} into English:\n\n{d['synopsis']}\n\n{d['long']}",
            }


@source("debian_synopsis")
def debian_synopsis(options: dict) -> Iterator[dict]:
    for d in descriptions(translation_text("en"), "en"):
        if 200 <= len(d["long"]) <= 1500:
            yield {
                "id": d["md5"],
                "prompt": f"Summarise this software package description in one sentence:\n\n{d['long']}",
            }


def faq_questions(text: str, max_len: int = 240) -> list[str]:
    """Numbered headings ending in '?' (or '?!'), joined across wrapped lines, first occurrence only."""
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r"^\s*\d+(?:\.\d+)+\.\s+(.*)$", line)
        if m:
            current = m.group(1).strip()
        elif current is not None and line[:1].isspace() and line.strip() and len(current) < max_len:
            current += " " + line.strip()
        else:
            current = None
        if current and current.rstrip("!").endswith("?"):
            if current not in out:
                out.append(current)
            current = None
    return out


@source("debian_faq")
def debian_faq(options: dict) -> Iterator[dict]:
    if not FAQ.is_file():
        raise UserError(f"{FAQ} is missing; as root run: apt-get install debian-faq")
    for i, q in enumerate(faq_questions(gzip.open(FAQ, "rt", encoding="utf-8", errors="replace").read())):
        yield {"id": f"debian-faq-{i}", "prompt": q}
