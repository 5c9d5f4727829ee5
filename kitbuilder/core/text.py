"""Strings from a kit made safe to show: one printable line on a terminal, whatever the kit holds.

A kit's strings (version, description, component ids, SBOM and provenance fields,
key ids, error messages quoting them) are chosen by whoever made the kit. Shown
raw they could move the cursor, retitle the terminal, start a new line that
looks like kit's own output, or reorder what the reader sees (bidirectional
overrides). Every such character is shown as an escape (``\\x1b``, ``\\u202e``)
instead. JSON output needs no such step: ``json.dumps`` escapes control
characters, and the strict loader has already refused strings that are not
Unicode text (lone surrogates).
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL; soft hyphen; Arabic letter mark; Mongolian vowel separator; zero-width and
# directional marks, line and paragraph separators, embeddings and overrides (U+200B-U+200F, U+2028-U+202E);
# word joiner, invisible operators and isolates (U+2060-U+206F); byte order mark; interlinear annotation
# marks; tag characters; and surrogates, which cannot be printed at all.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\U000e0000-\U000e007f\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` as one line of visible characters: every control, format or separator character escaped."""
    return _UNSAFE.sub(_escape, text)


def printable_tree(value: Any) -> Any:
    """A copy of a JSON-like value with every string (keys too) passed through ``printable``."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(key): printable_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(item) for item in value]
    return value
