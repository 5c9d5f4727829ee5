"""The JSON forms kitbuilder writes and the strict parser it reads them with.

Written documents are deterministic (sorted keys, fixed indentation, UTF-8,
trailing newline) so a rebuild is byte-identical. Read documents reject what a
lenient parser would silently accept: duplicate keys (two parsers could pick
different values), NaN/Infinity, non-object roots, and strings that are not
Unicode text (a lone surrogate such as ``"\\ud800"`` cannot be written as UTF-8,
so it would crash whatever prints or re-encodes it later).

Parsing cost is bounded before any tree is built: ``ParseLimits`` caps the JSON
values and containers a document may hold, counted on the raw bytes, so a
document made of millions of tiny values (``[[],[],...]``) is refused at the
price of a few passes over its bytes instead of gigabytes of Python objects
(docs/parse-limits.md says how each kind of document sets its limits).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kitbuilder.errors import FormatError


def dump_pretty(value: Any) -> bytes:
    """The form of every JSON file kitbuilder writes for humans and machines alike."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def dump_compact(value: Any) -> bytes:
    """A compact deterministic form, used inside the archive index."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Called once per JSON object: build the dict in C and look for the duplicate only when sizes differ
    # (a manifest of 10,000 files holds 30,000 objects; a per-key Python loop was a third of its parse).
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _bounded_int(text: str) -> int:
    # Kit documents hold sizes, offsets and sequences: 64-bit values, at most 20 characters with a sign.
    # Refusing longer ones here also spares int() the quadratic work on a number of millions of digits.
    if len(text) > 20:
        raise ValueError(f"a number of {len(text)} digits; kit documents hold integers of at most 20")
    return int(text)


def _reject_float(text: str) -> Any:
    # Kit documents hold only integers; a schema would accept 3.0 as an integer and code would then
    # slice or seek with a float.
    raise ValueError(f"non-integer number {text}; kit documents use integers only")


@dataclass(frozen=True)
class ParseLimits:
    """What parsing one document may cost, counted outside strings before the tree is built.

    ``max_values`` bounds JSON values plus object keys (each ``,`` ``:`` ``[`` ``{`` adds at most
    one, and every one of them costs a Python object); ``max_containers`` bounds arrays plus
    objects. ``why`` says where the limits come from, for the refusal message.
    """

    max_values: int
    max_containers: int
    why: str


# Any string token (a missing closing quote lets it run to the end, which keeps the scan linear),
# or a character that opens a container or separates values.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[{,:]', re.DOTALL)
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")


def check_cost(data: bytes, limits: ParseLimits, *, what: str) -> None:
    """FormatError if ``data`` holds more JSON values or containers than ``limits`` allow.

    A first count over the raw bytes also counts ``,:[{`` inside strings, so it can only
    overestimate; only when it exceeds a limit is the exact count taken (strings skipped),
    stopping as soon as the limit is passed, so the work is bounded by the limits.
    """
    containers = data.count(b"[") + data.count(b"{")
    values = data.count(b",") + data.count(b":") + containers + 1
    if values <= limits.max_values and containers <= limits.max_containers:
        return
    containers = 0
    values = 1
    # A well-formed document has at most one string per value, so this bounds the loop whatever the bytes.
    steps_left = 2 * limits.max_values + 2
    for token in _TOKEN.finditer(data):
        steps_left -= 1
        first = token.group()[:1]
        if first in (b"[", b"{"):
            containers += 1
            values += 1
        elif first in (b",", b":"):
            values += 1
        if values > limits.max_values or steps_left < 0:
            raise FormatError(
                f"{what}: holds more than {limits.max_values} JSON values, the most {limits.why} may hold "
                "(docs/parse-limits.md)"
            )
        if containers > limits.max_containers:
            raise FormatError(
                f"{what}: holds more than {limits.max_containers} JSON arrays and objects, the most {limits.why} "
                "may hold (docs/parse-limits.md)"
            )


def _check_text(value: Any) -> None:
    """ValueError at the first string (or key) that is not Unicode text: a lone surrogate from a \\u escape."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"string {item[:40]!r} holds a lone surrogate, which is not Unicode text") from exc
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_strict(text: str, *, floats: bool = False) -> Any:
    """JSON without duplicate keys, NaN/Infinity or lone surrogates (two parsers could read those differently).

    Floats are refused unless ``floats``: kit's own documents hold integers only, while
    documents kit merely checks (OCI configs, SBOMs) may carry floats. Raises ValueError,
    also for absurd nesting (never RecursionError, which no caller expects from a parse and which would
    surface as an internal error); callers turn it into their own typed error.
    """
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=None if floats else _reject_float,
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None
    # Valid UTF-8 cannot encode a surrogate, so one can only come from an escape; look for the tree walk's
    # reason on the text first, which keeps the walk off every document that has none.
    if _SURROGATE_ESCAPE_TEXT.search(text):
        _check_text(value)
    return value


def load_object(data: bytes, *, what: str, limits: ParseLimits | None = None) -> dict[str, Any]:
    """Parse ``data`` as a JSON object; raise FormatError naming ``what`` otherwise.

    With ``limits`` the parse cost is checked on the bytes first (``check_cost``).
    """
    if limits is not None:
        check_cost(data, limits, what=what)
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
            parse_int=_bounded_int,
        )
        del text  # the decoded copy is as large as the document; do not hold it while the tree is checked
        if _SURROGATE_ESCAPE_BYTES.search(data):
            _check_text(value)
    except RecursionError as exc:
        raise FormatError(f"{what}: nested too deeply to be a kit document") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc
    except ValueError as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value
