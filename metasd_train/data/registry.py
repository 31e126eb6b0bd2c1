"""Prompt sources by name (`data.domains.<d>.source`): each module of sources registers here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

SOURCES: dict[str, Callable[..., Iterator[dict]]] = {}


def source(name: str):
    def register(fn):
        SOURCES[name] = fn
        return fn

    return register
