"""Atomic output files: written under a temporary name, fsynced, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kitbuilder.errors import UsageError


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[BinaryIO]:
    """Yield a file that appears at ``final`` only if the block completes; never a partial file."""
    directory = final.parent if str(final.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise UsageError(f"{final}: cannot create output ({exc.strerror})") from exc
    temp = Path(temp_name)
    # mkstemp creates 0600; outputs get the usual mode the umask allows, like any new file.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        fsync_path(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(final: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_output(final) as out:
        out.write(data)
        os.fchmod(out.fileno(), mode)
