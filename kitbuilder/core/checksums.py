"""SHA256SUMS: the GNU coreutils checksum format a kit carries for stock tools.

Each line is ``<64 lowercase hex><space><space><path>\\n`` (text mode), sorted by
path, so ``sha256sum -c --strict SHA256SUMS`` checks an extracted kit. Paths
never contain newlines or backslashes (the spec forbids them), so no escaping
form is ever needed or accepted. Format 2 readers compare it with the signed file
list by a merge in this order (``check_listing``), holding no second copy of it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from kitbuilder.core.filelist import FileTable, path_order
from kitbuilder.errors import FormatError, IntegrityError

SHA256SUMS_NAME = "SHA256SUMS"


class _Listed(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...


_LINE = re.compile(r"([0-9a-f]{64})  ([^\n\\]+)")


def render(entries: Iterable[tuple[str, str]]) -> bytes:
    """SHA256SUMS bytes for ``(path, sha256_hex)`` pairs, sorted by path."""
    out = bytearray()
    for path, digest in sorted(entries):
        out += f"{digest}  {path}\n".encode()
    return bytes(out)


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


def check_listing(files: Sequence[_Listed], data: bytes, *, what: str) -> None:
    """SHA256SUMS ``data`` says exactly what the file list ``files`` says: one line per file, same digest.

    A merge in SHA256SUMS's order (sorted by path) that holds no second copy of either: the list's positions are
    taken in path order (``path_order``: no entry objects, no list of positions), each one's line compared with the
    bytes at that point. FormatError for a path the list holds twice; IntegrityError naming the first path where
    they differ.
    """
    paths: Sequence[str] = files.paths if isinstance(files, FileTable) else [f.path for f in files]
    digest: Callable[[int], str] = files.sha256 if isinstance(files, FileTable) else (lambda n: files[n].sha256)
    position = 0
    previous = None
    with memoryview(data) as view:
        for number in path_order(paths):
            path = paths[number]
            if path == previous:
                raise FormatError(f"{what}: {path} listed twice")
            previous = path
            line = f"{digest(number)}  {path}\n".encode()
            if view[position : position + len(line)] != line:
                raise IntegrityError(f"{SHA256SUMS_NAME}: differs from the signed file list at {path}")
            position += len(line)
    if position != len(data):
        extra = data[position:].split(b"\n", 1)[0][66:].decode("utf-8", "replace")
        raise IntegrityError(f"{SHA256SUMS_NAME}: lists {extra!r}, which is not in the signed file list")


def render_files(files: Sequence[_Listed]) -> bytes:
    """SHA256SUMS bytes for a file list (``FileTable`` or entries): like ``render``, without a list of pairs."""
    paths: Sequence[str] = files.paths if isinstance(files, FileTable) else [f.path for f in files]
    digest: Callable[[int], str] = files.sha256 if isinstance(files, FileTable) else (lambda n: files[n].sha256)
    out = io.BytesIO()  # its getvalue() hands out the buffer: no second copy of 100 MB of lines
    for number in path_order(paths):
        out.write(f"{digest(number)}  {paths[number]}\n".encode())
    return out.getvalue()
