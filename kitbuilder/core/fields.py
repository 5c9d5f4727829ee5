"""Typed reads of one field of a parsed JSON object, for the ``from_json`` of frozen models.

The documents these models come from are checked against their schema first; these reads
keep ``from_json`` fail-closed on its own (a caller that skipped the schema still gets a
FormatError naming the field, never a wrong-typed value inside a frozen model).
"""

from __future__ import annotations

from collections.abc import Mapping

from kitbuilder.errors import FormatError


def text(document: Mapping[str, object], key: str, *, what: str) -> str:
    """``document[key]`` as a string; FormatError naming ``what`` and the key otherwise."""
    value = document.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{what}: {key} must be a string")
    return value


def integer(document: Mapping[str, object], key: str, *, what: str) -> int:
    """``document[key]`` as a non-negative integer (JSON true/false are not integers here)."""
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what}: {key} must be a non-negative integer")
    return value


def texts(document: Mapping[str, object], key: str, *, what: str) -> tuple[str, ...]:
    """``document[key]`` as an array of strings."""
    value = document.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FormatError(f"{what}: {key} must be an array of strings")
    return tuple(value)


def known_keys(document: Mapping[str, object], keys: frozenset[str], *, what: str) -> None:
    """FormatError for a key the model has no field for: a field nothing reads is refused, not dropped."""
    extra = sorted(set(document) - keys)
    if extra:
        raise FormatError(f"{what}: unknown field {extra[0]!r}")
