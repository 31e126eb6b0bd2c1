"""`key=value` options into a dataclass, by its field types. Text arrives as typed: no YAML parsing,
so `prompt=yes`, `prompt=# Title` or `prompt=a: b` are the strings they look like."""

from __future__ import annotations

import dataclasses
import types
import typing

from metasd_train.errors import UserError

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(key: str, text: str, kind):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [k for k in typing.get_args(kind) if k is not type(None)]
        if text.lower() in ("null", "none") and inner[0] is not str:
            return None
        kind = inner[0]
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise UserError(f"{key}={text!r} is not a boolean; use {key}=true or {key}=false")
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{key}={text!r} is not a valid {kind.__name__}") from None


def parse(cls, argv: list[str], required: tuple[str, ...] = ()):
    """An instance of dataclass `cls` from `key=value` strings; one error line naming any bad option."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        if not sep or key not in hints:
            raise UserError(f"bad option {arg!r}; valid: {', '.join(f'{n}=' for n in names)}")
        values[key] = _convert(key, text, hints[key])
    missing = [k for k in required if k not in values]
    if missing:
        raise UserError(f"{missing[0]}=... is required; valid: {', '.join(f'{n}=' for n in names)}")
    return cls(**values)


def check_ranges(obj, checks: list[tuple[str, typing.Callable, str]]) -> None:
    """(field, ok(value), what it must be) for fields that are set; one error line for the first off."""
    for key, ok, want in checks:
        value = getattr(obj, key)
        if value is not None and not ok(value):
            raise UserError(f"{key}={value} is out of range: it must be {want}")
