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
from pathlib import Path

from kitbuilder.errors import KitError, UsageError

# What an input of each kind may hold; an honest one is a small fraction of this.
KEY_BYTES = 64 << 10  # a PEM key is a few hundred bytes
TRUST_ROOT_BYTES = 1 << 20  # a root lists keys and signatures: a few KiB per key
STATE_BYTES = 64 << 10  # an anti-rollback record is four fields


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
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise UsageError(f"{path}: cannot read {what} (a symbolic link; kit reads a regular file here)") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise UsageError(f"{path}: cannot read {what} ({kind})")
        if info.st_size > limit:
            raise too_big(f"{path}: {info.st_size} bytes, more than the {limit} a {what} may hold")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, limit + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                # The file grew after the check: the limit still holds.
                raise too_big(f"{path}: more than the {limit} bytes a {what} may hold")
        return b"".join(chunks)
    finally:
        os.close(fd)
