"""Small files a user names beside a kit (keys, trust roots, attestations, the anti-rollback state), read whole.

``Path.read_bytes`` trusts the path to be a modest regular file. A FIFO there
hangs the read forever, a device such as /dev/zero never ends it (memory grows
until the host kills kit), and a file of gigabytes is read before any parser
can refuse it. Every such input is opened here instead: without blocking,
checked to be a regular file, and read up to a limit that says what the
document may hold.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from kitbuilder.errors import KitError, UsageError

# What an input of each kind may hold; an honest one is a small fraction of this.
KEY_BYTES = 64 << 10  # a PEM key is a few hundred bytes
TRUST_ROOT_BYTES = 1 << 20  # a root lists keys and signatures: a few KiB per key
STATE_BYTES = 64 << 10  # an anti-rollback record is four fields


class NotRegularFile(Exception):
    """What was found where a regular file was expected: ``kind`` is "a directory", "a symbolic link" or
    "not a regular file"; each caller words the refusal for its own input."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _open_proven(path: Path | str, follow_links: bool, identity: tuple[int, int] | None) -> int:
    """``path`` opened without blocking (a FIFO planted there cannot hang kit), proven by fstat on the open file a
    regular file and, given an ``identity`` (st_dev, st_ino), that very file: NotRegularFile for anything else (a link
    too, when ``follow_links`` is off; "another file" for a directory above it swapped for a link, or the name made a
    hard link to a file elsewhere). OSError from the open propagates for the caller to word."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise NotRegularFile("a symbolic link") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile("a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file")
        if identity is not None and (info.st_dev, info.st_ino) != identity:
            raise NotRegularFile("another file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path | str, *, follow_links: bool = True, identity: tuple[int, int] | None = None) -> BinaryIO:
    """``path`` opened for reading, proven a regular file (and, given ``identity``, that very file) as
    ``_open_proven`` proves it, then switched back to blocking reads."""
    fd = _open_proven(path, follow_links, identity)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(
    path: Path | str, limit: int, *, follow_links: bool = True, identity: tuple[int, int] | None = None
) -> bytes:
    """The first ``limit`` bytes of ``path`` (all of it when shorter), proven a regular file (and, given ``identity``,
    that very file) as ``_open_proven`` proves it.

    For reading many small files: one open, one fstat, reads until ``limit`` bytes or the end, one close, and no
    file object (``open_regular`` makes a buffered one and switches blocking back on: four more system calls that
    a regular file does not need, since O_NONBLOCK does not apply to it). NotRegularFile and OSError as
    ``open_regular``; fewer than ``limit`` bytes back means the file ended there.
    """
    fd = _open_proven(path, follow_links, identity)
    try:
        data = os.read(fd, limit)
        if len(data) < limit and data:
            parts = [data]
            got = len(data)
            while got < limit and (more := os.read(fd, limit - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def read_bounded(fd: int, limit: int, too_big: Callable[[int | None], KitError]) -> bytes:
    """All of the regular file open at ``fd``, at most ``limit`` bytes.

    ``too_big(size)`` words the refusal: with the size fstat gives, or None when the file grew past
    ``limit`` while it was read (the limit holds either way).
    """
    size = os.fstat(fd).st_size
    if size > limit:
        raise too_big(size)
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise too_big(None)
    return b"".join(chunks)


_CHUNK = 1 << 20


def read_small(
    path: Path,
    *,
    limit: int,
    what: str,
    follow_links: bool = True,
    too_big: type[KitError] = UsageError,
) -> bytes:
    """All of ``path``, a regular file of at most ``limit`` bytes.

    OSError from opening it propagates (each caller words a missing file its own way); what is not a
    regular file, a link when ``follow_links`` is off, and a file over ``limit`` are refused naming ``what``.
    """
    try:
        handle = open_regular(path, follow_links=follow_links)
    except NotRegularFile as exc:
        if exc.kind == "a symbolic link":
            raise UsageError(f"{path}: cannot read {what} (a symbolic link; kit reads a regular file here)") from exc
        raise UsageError(f"{path}: cannot read {what} ({exc.kind})") from exc

    def refuse(size: int | None) -> KitError:
        if size is None:
            return too_big(f"{path}: more than the {limit} bytes a {what} may hold")
        return too_big(f"{path}: {size} bytes, more than the {limit} a {what} may hold")

    with handle:
        return read_bounded(handle.fileno(), limit, refuse)
