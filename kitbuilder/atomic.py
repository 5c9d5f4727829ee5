"""Files and directories kit writes: built under a temporary name beside the target, fsynced, renamed into place.

Temporary names. Every temporary entry kit makes is ``<prefix><pid>-<16 hex><suffix>``
(e.g. ``.demo.kit.tar.zst.kit-tmp-4242-0123456789abcdef.part``), created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` (a file) or ``mkdir`` (a directory): an entry
already there, a planted symbolic link included, is never opened or followed; kit
simply picks another random name. While in use, the entry is held under an
``flock``. A leftover of a killed run is removed by the next run that writes the
same target, but only when it is provably kit's own: a regular file (or a real
directory) owned by this user, under kit's name pattern, whose lock is free and
whose pid no longer runs. Anything else (a symbolic link, another user's file) is
left alone, so cleaning up can never be turned against a file elsewhere.

Errors. An ``OSError`` while writing becomes a ``KitError`` naming the path the
user asked for (not the temporary one): ``HostIOError`` (exit 12) for what the
host refuses (disk full, quota, read-only file system, permission), ``UsageError``
(exit 2) for a target that cannot be a file (a directory, a missing parent).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from kitbuilder import faults
from kitbuilder.errors import HostIOError, KitError, UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

TEMP_MARK = ".kit-tmp-"
FILE_SUFFIX = ".part"
DIR_SUFFIX = ".d"
# Names up to NAME_MAX (255 bytes) must leave room for the mark, pid, token and suffix.
_LONGEST_STEM = 160
_ATTEMPTS = 100

# The target path itself is wrong (not the host refusing): the user fixes the path, exit 2.
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG})
# What a write is refused with when the host, not the path, is the problem.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def os_error(exc: OSError, path: Path, *, action: str = "write") -> KitError:
    """The KitError for ``exc`` raised while kit did ``action`` on ``path`` (the path the user knows)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _PATH_ERRNOS:
        return UsageError(f"{path}: cannot {action} ({reason}): fix the path and rerun")
    return HostIOError.from_os_error(exc, path=path, action=action)


def action_for(exc: OSError) -> str:
    """A verb for an OSError whose operation is not known (the CLI's safety net)."""
    return "write" if exc.errno in _WRITE_ERRNOS else "access"


@dataclass(frozen=True)
class TempPattern:
    """A family of temporary names: ``prefix`` + ``<pid>-<token>`` + ``suffix``."""

    prefix: str
    suffix: str

    def fresh(self) -> str:
        return f"{self.prefix}{os.getpid()}-{secrets.token_hex(8)}{self.suffix}"

    def matches(self, name: str) -> bool:
        return (
            len(name) > len(self.prefix) + len(self.suffix)
            and name.startswith(self.prefix)
            and name.endswith(self.suffix)
        )

    def pid(self, name: str) -> int | None:
        """The pid that made ``name`` (a name of this family), or None when it carries none."""
        middle = name[len(self.prefix) : len(name) - len(self.suffix)]
        match = re.fullmatch(r"([1-9][0-9]{0,9})-[0-9a-f]{16}", middle)
        return int(match.group(1)) if match else None


def temp_pattern(final: Path, suffix: str = FILE_SUFFIX) -> TempPattern:
    """Temporary names for ``final``; they match ``.NAME.*.part``, the glob patch also cleans."""
    stem = (
        final.name
        if len(os.fsencode(final.name)) <= _LONGEST_STEM
        else os.fsdecode(os.fsencode(final.name)[:_LONGEST_STEM])
    )
    return TempPattern(f".{stem}{TEMP_MARK}", suffix)


@dataclass(frozen=True)
class Kept:
    """A temporary-looking entry that was not removed, and why."""

    path: Path
    live: bool  # True: a running kit holds it; False: not provably kit's own (symlink, other owner, other type)


def clear_stale(directory: Path, pattern: TempPattern, *, is_dir: bool) -> list[Kept]:
    """Remove leftovers of killed runs under ``pattern`` in ``directory``; return the matching entries kept."""
    kept: list[Kept] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return kept  # nothing to clean where nothing can be listed; the write itself reports the directory
    for name in sorted(names):
        if not pattern.matches(name):
            continue
        path = directory / name
        verdict = _remove_if_stale(path, pattern.pid(name), is_dir=is_dir)
        if verdict is not None:
            kept.append(Kept(path, live=verdict))
    return kept


def _remove_if_stale(path: Path, pid: int | None, *, is_dir: bool) -> bool | None:
    """None when removed (or already gone); True when a live kit holds it; False when it is not provably kit's."""
    try:
        before = path.lstat()
    except FileNotFoundError:
        return None
    except OSError:
        return False
    wanted = stat.S_ISDIR if is_dir else stat.S_ISREG
    if not wanted(before.st_mode) or before.st_uid != os.geteuid():
        return False
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino) or not wanted(now.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        if pid is not None and _running(pid):
            # Made by a process that still runs: it may be between creating and locking the entry.
            return True
        with contextlib.suppress(OSError):
            if is_dir:
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return None
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return True


def check_target(final: Path) -> Path:
    """UsageError unless ``final`` can become a file: not a directory, in an existing directory; returns the latter."""
    directory = final.parent
    try:
        if stat.S_ISDIR(final.lstat().st_mode):
            raise UsageError(f"{final}: is a directory; give the path of a file to write")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error(exc, final, action="write") from exc
    try:
        info = directory.stat()
    except FileNotFoundError as exc:
        raise UsageError(
            f"{final}: cannot write: directory {directory} does not exist; create it or choose another path"
        ) from exc
    except OSError as exc:
        raise os_error(exc, final, action="write") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{final}: cannot write: {directory} is not a directory")
    return directory


class _Output(io.BufferedWriter):
    """The temporary file's stream; a failed write names the final path (ENOSPC rarely shows before a write)."""

    def __init__(self, fd: int, final: Path) -> None:
        super().__init__(io.FileIO(fd, "wb", closefd=True), buffer_size=1 << 20)
        self.final = final

    def write(self, buffer: ReadableBuffer, /) -> int:
        try:
            return super().write(buffer)
        except OSError as exc:
            raise os_error(exc, self.final) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise os_error(exc, self.final) from exc


class AtomicFile:
    """A new file that appears at ``final`` only complete: ``finish()`` fsyncs it, ``commit()`` renames it.

    Use as a context manager: leaving the block normally commits, an exception discards the
    temporary file (nothing appears at ``final``, an earlier file there stays as it was).
    """

    def __init__(self, final: Path, *, mode: int | None = None, shown_as: Path | None = None) -> None:
        self.final = final
        # The path errors name: ``final`` unless that is itself a temporary path of kit's.
        self.shown_as = shown_as or final
        self.directory = check_target(final)
        pattern = temp_pattern(final)
        clear_stale(self.directory, pattern, is_dir=False)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # the mode any new file gets
        self._mode = mode
        self.temp, fd = _create_file(self.directory, pattern, self.shown_as)
        self.stream = _Output(fd, self.shown_as)
        self._finished = self._done = False

    def finish(self) -> None:
        """Flush, set the mode and fsync: the content is durable under the temporary name."""
        if self._finished:
            return
        self.stream.flush()
        try:
            os.fchmod(self.stream.fileno(), self._mode)
            os.fsync(self.stream.fileno())
        except OSError as exc:
            raise os_error(exc, self.shown_as) from exc
        self._finished = True

    def commit(self) -> None:
        """Rename into place and make the rename durable."""
        self.finish()
        faults.point("atomic-before-rename")  # a kill here leaves a complete temp file: the next run clears it
        try:
            os.replace(self.temp, self.final)
        except OSError as exc:
            raise os_error(exc, self.shown_as) from exc
        self._done = True
        self.stream.close()  # releases the lock; the name it guarded is gone
        try:
            fsync_path(self.directory)
        except OSError as exc:
            raise os_error(exc, self.shown_as) from exc

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(KitError, OSError):
            self.stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:
            self.discard()
            return
        try:
            if not self._done:
                self.commit()
        except BaseException:
            self.discard()
            raise


def _create_file(directory: Path, pattern: TempPattern, final: Path) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_ATTEMPTS):
        temp = directory / pattern.fresh()
        try:
            fd = os.open(temp, flags, 0o600)
        except FileExistsError:
            continue  # taken (or planted): never opened, another name is drawn
        except OSError as exc:
            raise os_error(exc, final) from exc
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file only this process has opened: never contended
        return temp, fd
    raise UsageError(f"{final}: cannot create a temporary file beside it ({_ATTEMPTS} names taken)")


@contextlib.contextmanager
def atomic_output(final: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a stream whose content appears at ``final`` only if the block completes; never a partial file."""
    with AtomicFile(final, mode=mode) as staged:
        yield staged.stream


def write_atomic(final: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_output(final, mode=mode) as out:
        out.write(data)


def commit_together(files: Sequence[AtomicFile]) -> None:
    """Commit several files that only make sense together, in order.

    Everything is written and fsynced first, so a full disk stops before any rename.
    If a later rename still fails, the files this call already renamed are removed again:
    none of the new set stays beside the older others.
    """
    try:
        for item in files:
            item.finish()
        committed: list[AtomicFile] = []
        for item in files:
            try:
                item.commit()
            except BaseException:
                for earlier in committed:
                    with contextlib.suppress(OSError):
                        os.unlink(earlier.final)
                raise
            committed.append(item)
    finally:
        for item in files:
            item.discard()


def write_atomic_group(items: Sequence[tuple[Path, bytes, int]]) -> None:
    """``write_atomic`` for several (path, data, mode) files committed together (see ``commit_together``)."""
    staged: list[AtomicFile] = []
    try:
        for final, data, mode in items:
            staged.append(AtomicFile(final, mode=mode))
            staged[-1].stream.write(data)
        commit_together(staged)
    finally:
        for item in staged:
            item.discard()


@contextlib.contextmanager
def scratch_dir(parent: Path, pattern: TempPattern, *, what: Path) -> Iterator[Path]:
    """A new private directory in ``parent`` under ``pattern``, locked while the block runs, removed after.

    ``what`` is the path named in errors (the output the scratch space is for). Leftover
    scratch directories of killed runs are for the caller to clear (``clear_stale``).
    """
    for _ in range(_ATTEMPTS):
        path = parent / pattern.fresh()
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise os_error(exc, what) from exc
        break
    else:
        raise UsageError(f"{what}: cannot create a temporary directory in {parent} ({_ATTEMPTS} names taken)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        raise os_error(exc, what) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        faults.point("scratch-dir-created")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
