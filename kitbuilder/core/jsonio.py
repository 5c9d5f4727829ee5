"""The JSON forms kitbuilder writes and the strict parser it reads them with.

Written documents are deterministic (sorted keys, fixed indentation, UTF-8,
trailing newline) so a rebuild is byte-identical. Read documents reject what a
lenient parser would silently accept: duplicate keys (two parsers could pick
different values), NaN/Infinity, and non-object roots.
"""

from __future__ import annotations

import json
from typing import Any

from kitbuilder.errors import FormatError


def dump_pretty(value: Any) -> bytes:
    """The form of every JSON file kitbuilder writes for humans and machines alike."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def dump_compact(value: Any) -> bytes:
    """A compact deterministic form, used inside the archive index."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _reject_float(text: str) -> Any:
    # Kit documents hold only integers; a schema would accept 3.0 as an integer and code would then
    # slice or seek with a float.
    raise ValueError(f"non-integer number {text}; kit documents use integers only")


def loads_strict(text: str, *, floats: bool = False) -> Any:
    """JSON without duplicate keys or NaN/Infinity (two parsers could read those differently).

    Floats are refused unless ``floats``: kit's own documents hold integers only, while
    documents kit merely checks (OCI configs, SBOMs) may carry floats. Raises ValueError,
    or RecursionError for absurd nesting; callers turn those into their own typed errors.
    """
    return json.loads(
        text,
        object_pairs_hook=_reject_duplicates,
        parse_constant=_reject_constant,
        parse_float=None if floats else _reject_float,
    )


def load_object(data: bytes, *, what: str) -> dict[str, Any]:
    """Parse ``data`` as a JSON object; raise FormatError naming ``what`` otherwise."""
    try:
        value = loads_strict(data.decode("utf-8"))
    except RecursionError as exc:
        raise FormatError(f"{what}: nested too deeply to be a kit document") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value
