"""SHA256SUMS: the GNU coreutils checksum format a kit carries for stock tools.

Each line is ``<64 lowercase hex><space><space><path>\\n`` (text mode), sorted by
path, so ``sha256sum -c --strict SHA256SUMS`` checks an extracted kit. Paths
never contain newlines or backslashes (the spec forbids them), so no escaping
form is ever needed or accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kitbuilder.errors import FormatError

_LINE = re.compile(r"([0-9a-f]{64})  ([^\n\\]+)")


def render(entries: Iterable[tuple[str, str]]) -> bytes:
    """SHA256SUMS bytes for ``(path, sha256_hex)`` pairs, sorted by path."""
    lines = [f"{digest}  {path}\n" for path, digest in sorted(entries)]
    return "".join(lines).encode("utf-8")


def parse(data: bytes) -> dict[str, str]:
    """Path → digest; rejects anything ``render`` would not have produced."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("SHA256SUMS: not UTF-8") from exc
    if text and not text.endswith("\n"):
        raise FormatError("SHA256SUMS: last line has no newline")
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        if not match:
            raise FormatError(f"SHA256SUMS line {number}: expected '<sha256>  <path>'")
        digest, path = match.groups()
        if path in result:
            raise FormatError(f"SHA256SUMS line {number}: {path} listed twice")
        result[path] = digest
    if render(result.items()) != data:
        raise FormatError("SHA256SUMS: lines are not in canonical sorted order")
    return result
