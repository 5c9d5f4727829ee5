"""Strict reads of a parsed document (JSON or YAML): every field typed, every unread field an error.

Shared by the apply jobs, their checks and backfill job files (core/jobs, core/kitchecks, core/backfilljob):
a wrong type, a missing or unknown field, or an integer out of range is a FormatError naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from kitbuilder.errors import FormatError

# SQLite and PostgreSQL both store integers as signed 64-bit values.
INT64_MAX = 2**63 - 1
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A table, optionally schema-qualified: one dot at most (PostgreSQL reads a.b.c as another database).
TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
PHASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def show(value: Any) -> str:
    """A value from a kit, safe for a terminal and short enough for one line."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_MISSING: Any = object()


class Fields:
    """Strict reads from one mapping: every field typed, every unread field an error (see ``finish``)."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise FormatError(f"{where}: expected a mapping, got {type_name(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self.read: list[str] = []

    def fail(self, name: str, message: str) -> FormatError:
        return FormatError(f"{self.where}: {name}: {message}")

    def get(self, name: str, required: bool) -> Any:
        self.read.append(name)
        if name not in self.data:
            if required:
                raise self.fail(name, "required field is missing")
            return _MISSING
        return self.data[name]

    def text(
        self, name: str, *, required: bool = False, pattern: re.Pattern[str] | None = None, nonempty: bool = False
    ) -> str | None:
        value = self.get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {type_name(value)} {show(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(name, f"{show(value)} does not match {pattern.pattern}")
        if nonempty and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def required_text(self, name: str, *, pattern: re.Pattern[str] | None = None, nonempty: bool = False) -> str:
        value = self.text(name, required=True, pattern=pattern, nonempty=nonempty)
        assert value is not None
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {type_name(value)} {show(value)}")
        return value

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self.get(name, False)
        if value is _MISSING:
            return default
        return integer(value, low, high, lambda message: self.fail(name, message))

    def number(self, name: str, *, default: float, low: float, high: float) -> float:
        value = self.get(name, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"expected a number, got {type_name(value)} {show(value)}")
        if not low <= value <= high:
            raise self.fail(name, f"{show(value)} is out of range ({low}..{high})")
        return float(value)

    def names(self, name: str, *, pattern: re.Pattern[str], required: bool = False) -> tuple[str, ...]:
        value = self.get(name, required)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not value:
            raise self.fail(name, f"expected a non-empty list of names, got {type_name(value)} {show(value)}")
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise self.fail(name, f"{show(item)} is not a name matching {pattern.pattern}")
        if len(set(value)) != len(value):
            raise self.fail(name, "names a column twice")
        return tuple(value)

    def raw(self, name: str) -> Any:
        value = self.get(name, False)
        return None if value is _MISSING else value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - set(self.read), key=str)
        if unknown:
            raise FormatError(
                f"{self.where}: unknown field {show(unknown[0])} (allowed: {', '.join(sorted(set(self.read)))}); "
                "kit would not know what to do with it"
            )


def integer(value: Any, low: int, high: int, fail: Callable[[str], FormatError]) -> int:
    # bool is an int in Python, but `true` is not a number in a kit.
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"expected an integer, got {type_name(value)} {show(value)}")
    if not low <= value <= high:
        raise fail(f"{value} is out of range ({low}..{high})")
    return value
