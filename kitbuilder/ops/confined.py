"""Work inside a directory kit does not own, without ever leaving it.

``kit patch`` writes into directories other people can write too: the
directory of ``--out``, an installed kit. Every operation here is relative to
one open directory descriptor and walks the rest of a path one component at a
time with ``O_NOFOLLOW``, so a symbolic link planted anywhere below that
directory is refused instead of followed, and a path is never resolved twice
(no check by name, then use by name). Files kit creates for itself are created
with ``O_CREAT | O_EXCL | O_NOFOLLOW``. Host failures (disk full, read-only
filesystem, permissions) become ``HostIOError`` naming the path; the caller
decides what a refusal is worth.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from kitbuilder import inputfile
from kitbuilder.errors import HostIOError, KitError, UsageError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted where a file is expected must not hang the open; O_NOCTTY: nor may a terminal.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20
TEMP_TOKEN_BYTES = 6  # the random part of a temporary file's name: 12 hex digits

ErrorFactory = Callable[[str], KitError]


def host_error(exc: OSError, where: object, action: str) -> KitError:
    """The error for an OSError the host raised at ``where``: exit 12 for the environment, else usage."""
    return HostIOError.from_os_error(exc, path=where, action=action)


class Directory:
    """An open directory and fd-relative, link-refusing operations on the names below it.

    ``shown`` is how messages name the directory. Relative paths use '/' and
    have already passed the kit path rules (no '..', no empty component).
    """

    def __init__(self, fd: int, shown: str) -> None:
        self.fd = fd
        self.shown = shown

    @classmethod
    def open(cls, path: Path, *, what: str = "directory") -> Directory:
        """Open a directory the user named (links in that name are the user's choice and are followed)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise UsageError(f"{path}: cannot open {what} ({exc.strerror})") from exc
            raise host_error(exc, path, f"open {what}") from exc
        return cls(fd, str(path).rstrip("/") or "/")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def name(self, relative: str) -> str:
        return f"{self.shown}/{relative}"

    # ---------------------------------------------------------------------------------------------------------
    # locks

    def lock(self, *, busy: str) -> None:
        """flock the directory itself, non-blocking: nothing is created, so nothing can be left stale."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(busy) from exc
        except OSError as exc:
            raise host_error(exc, self.shown, "lock") from exc

    @contextlib.contextmanager
    def lock_file(self, name: str, *, busy: str) -> Iterator[None]:
        """Hold an flock on the file ``name`` here; the file's presence alone means nothing.

        A lock left by a killed run is simply taken again: only a live flock
        counts. It is opened without following links and must be a regular file,
        so a planted link or FIFO is refused and nothing outside is created or
        touched. After locking, the name must still be the locked file (another
        run may have removed it meanwhile); on leaving, it is removed under the lock.
        """
        for _ in range(8):
            fd = self._open_lock(name)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as exc:
                    raise UsageError(busy) from exc
                except OSError as exc:
                    raise host_error(exc, self.name(name), "lock") from exc
                if not self._same_file(fd, name):
                    continue
                try:
                    yield
                finally:
                    if self._same_file(fd, name):
                        with contextlib.suppress(OSError):
                            os.unlink(name, dir_fd=self.fd)
                return
            finally:
                os.close(fd)
        raise UsageError(f"{self.name(name)}: lock file keeps changing under kit; another process is racing it")

    def _open_lock(self, name: str) -> int:
        try:
            fd = os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600, dir_fd=self.fd
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise self._planted(name) from exc
            raise host_error(exc, self.name(name), "create lock file") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._planted(name)
        return fd

    def _planted(self, name: str) -> UsageError:
        return UsageError(
            f"{self.name(name)}: is not a regular file kit made (a link or special file?); remove it and rerun"
        )

    def _same_file(self, fd: int, name: str) -> bool:
        try:
            now = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    # ---------------------------------------------------------------------------------------------------------
    # walking

    def kind(self, name: str, dir_fd: int | None = None) -> str | None:
        """'file', 'dir', 'link', 'other' or None (absent) for the entry ``name`` (one component), never following."""
        try:
            info = os.stat(name, dir_fd=self.fd if dir_fd is None else dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if stat.S_ISREG(info.st_mode):
            return "file"
        if stat.S_ISDIR(info.st_mode):
            return "dir"
        if stat.S_ISLNK(info.st_mode):
            return "link"
        return "other"

    def device(self, relative: str) -> int | None:
        """The filesystem (st_dev) of the entry at ``relative`` ('' for this directory), None when it is absent.

        Reached like every other path here, one component at a time without following a link.
        """
        if not relative:
            return os.fstat(self.fd).st_dev
        with self.parent(relative, create=False, refuse=UsageError) as found:
            if found is None:
                return None
            try:
                return os.stat(found[1], dir_fd=found[0], follow_symlinks=False).st_dev
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise host_error(exc, self.name(relative), "inspect") from exc

    @contextlib.contextmanager
    def parent(self, relative: str, *, create: bool, refuse: ErrorFactory) -> Iterator[tuple[int, str] | None]:
        """The open parent directory of ``relative`` and its last component, or None when a parent is absent.

        A parent component that is a link, or (when ``create``) a file or other
        non-directory, is refused with ``refuse(message)``. Without ``create``, a
        component that is a plain file means the path does not exist (None).
        Missing components are made (mode 0755 less the umask) when ``create``.
        """
        parts = relative.split("/")
        fds: list[int] = []
        current = self.fd
        try:
            for number, part in enumerate(parts[:-1]):
                shown = self.name("/".join(parts[: number + 1]))
                try:
                    current = os.open(part, DIR_FLAGS, dir_fd=current)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    try:
                        os.mkdir(part, 0o755, dir_fd=current)
                        current = os.open(part, DIR_FLAGS, dir_fd=current)
                    except OSError as exc:
                        raise host_error(exc, shown, "create directory") from exc
                except NotADirectoryError as exc:
                    found = self.kind(part, current)
                    if found == "link":
                        raise refuse(
                            f"{shown}: is a symbolic link; kit never follows links inside {self.shown}"
                        ) from exc
                    if not create and found in ("file", None):
                        yield None
                        return
                    raise refuse(f"{shown}: is not a directory, but {self.name(relative)} needs it to be one") from exc
                except OSError as exc:
                    raise host_error(exc, shown, "open directory") from exc
                fds.append(current)
            yield current, parts[-1]
        finally:
            for fd in fds:
                os.close(fd)

    def open_regular(self, relative: str, *, refuse: ErrorFactory) -> int | None:
        """A read descriptor for the regular file at ``relative``, or None when absent or not a regular file."""
        with self.parent(relative, create=False, refuse=refuse) as found:
            if found is None:
                return None
            parent_fd, name = found
            try:
                fd = os.open(name, READ_FLAGS, dir_fd=parent_fd)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO):
                    return None
                raise host_error(exc, self.name(relative), "read") from exc
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            os.set_blocking(fd, True)
            return fd

    # ---------------------------------------------------------------------------------------------------------
    # kit's own files and directories

    def make_private_dir(self, name: str) -> Directory:
        """Create the directory ``name`` here (it must not exist) and open it; mode 0700."""
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
            fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            raise host_error(exc, self.name(name), "create directory") from exc
        return Directory(fd, self.name(name))

    def open_subdir(self, name: str, *, refuse: ErrorFactory) -> Directory | None:
        """Open the directory ``name`` here, None when absent; a link or non-directory is refused."""
        return Directory.open_below(self.fd, name, self.name(name), refuse=refuse)

    @staticmethod
    def open_below(parent_fd: int, name: str, shown: str, *, refuse: ErrorFactory) -> Directory | None:
        """Open the directory ``name`` in the open directory ``parent_fd`` without following a link."""
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            raise refuse(f"{shown}: is not a directory kit made (a link or a file?)") from exc
        except OSError as exc:
            raise host_error(exc, shown, "open directory") from exc
        return Directory(fd, shown)

    def walk(self) -> Iterator[tuple[str, str | None]]:
        """Every entry below this directory as (relative path, kind), parents before children; links not followed."""
        try:
            names = sorted(os.listdir(self.fd))
        except OSError as exc:
            raise host_error(exc, self.shown, "list") from exc
        for name in names:
            kind = self.kind(name)
            yield name, kind
            if kind == "dir":
                below = Directory.open_below(self.fd, name, self.name(name), refuse=UsageError)
                if below is not None:
                    with below:
                        for relative, inner in below.walk():
                            yield f"{name}/{relative}", inner

    def create(self, name: str, *, mode: int = 0o644) -> BinaryIO:
        """A new file ``name`` here, created exclusively (a planted name of any kind is refused)."""
        try:
            fd = os.open(name, CREATE_FLAGS, mode, dir_fd=self.fd)
        except FileExistsError as exc:
            raise UsageError(
                f"{self.name(name)}: already exists where kit creates a new file; remove it and rerun"
            ) from exc
        except OSError as exc:
            raise host_error(exc, self.name(name), "create") from exc
        return os.fdopen(fd, "wb")

    def remove_tree(self, name: str, *, refuse: ErrorFactory) -> None:
        """Remove the directory ``name`` here and everything below it, following no link (fd-based rmtree)."""
        found = self.kind(name)
        if found is None:
            return
        if found != "dir":
            raise refuse(f"{self.name(name)}: is not a directory kit made (a link or a file?); remove it and rerun")
        try:
            shutil.rmtree(name, dir_fd=self.fd)
        except OSError as exc:
            raise host_error(exc, self.name(name), "remove") from exc

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise host_error(exc, self.name(name), "remove") from exc

    def sync(self) -> None:
        """fsync the directory, so renames and removals inside it are durable."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise host_error(exc, self.shown, "sync") from exc

    @contextlib.contextmanager
    def new_file(self, name: str, *, mode: int = 0o644) -> Iterator[BinaryIO]:
        """A new file ``name`` (created exclusively), flushed and fsynced when the block completes.

        A write the host refuses (disk full, quota) becomes HostIOError naming the file; the
        file's buffer is dropped rather than flushed again, so that error is the one reported.
        """
        handle = self.create(name, mode=mode)
        try:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                handle.close()
            raise host_error(exc, self.name(name), "write") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                handle.close()
            raise
        try:
            handle.close()
        except OSError as exc:
            raise host_error(exc, self.name(name), "write") from exc

    @contextlib.contextmanager
    def atomic_file(self, name: str, *, mode: int = 0o644) -> Iterator[BinaryIO]:
        """Yield a new file that appears as ``name`` here only if the block completes: temp, fsync, rename.

        The temp file ``.NAME.<random>.part`` is created exclusively beside it and
        removed on any failure; a kill leaves it for ``remove_leftovers`` to take.
        """
        if self.kind(name) == "dir":
            raise UsageError(f"{self.name(name)}: is a directory; name a file to write")
        umask = os.umask(0)
        os.umask(umask)
        temp = f".{name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.part"
        try:
            with self.new_file(temp, mode=mode & ~umask) as handle:
                try:
                    yield handle
                except OSError as exc:
                    raise host_error(exc, self.name(name), "write") from exc
            try:
                os.replace(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except OSError as exc:
                raise host_error(exc, self.name(name), "write") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self.fd)
            raise
        self.sync()

    def remove_leftovers(self, name: str) -> None:
        """Remove the ``.NAME.<random>.part`` files a killed write of ``name`` left here (never following links)."""
        # Exactly the names atomic_file gives ``name``: a prefix match would also take another output's live
        # temporary file (``.demo-1.2.1.<random>.part`` starts with ``.demo-1.2.``) or another tool's.
        ours = re.compile(re.escape(f".{name}.") + f"[0-9a-f]{{{2 * TEMP_TOKEN_BYTES}}}" + re.escape(".part"))
        try:
            entries = os.listdir(self.fd)
        except OSError as exc:
            raise host_error(exc, self.shown, "list") from exc
        for entry in entries:
            if ours.fullmatch(entry) and self.kind(entry) in ("file", "link"):
                self.unlink(entry)


def remove_directories(parent_fd: int, name: str, shown: str, *, refuse: ErrorFactory) -> None:
    """Remove the directory ``name`` in ``parent_fd`` and the directories below it, deepest first, following no link.

    Anything else found inside (a file, a link, a special file) is refused with
    ``refuse(what it is)`` and stays. Every step is the ``rmdir`` of an empty
    directory, so a kill part-way leaves a smaller tree that a second call removes.
    """
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise refuse(f"{shown} is not a directory") from exc
        raise host_error(exc, shown, "open directory") from exc
    try:
        try:
            entries = sorted(os.listdir(fd))
        except OSError as exc:
            raise host_error(exc, shown, "list") from exc
        for entry in entries:
            try:
                mode = os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise host_error(exc, f"{shown}/{entry}", "inspect") from exc
            if not stat.S_ISDIR(mode):
                raise refuse(f"it holds {shown}/{entry}")
            remove_directories(fd, entry, f"{shown}/{entry}", refuse=refuse)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise refuse(f"something was added to {shown} meanwhile") from exc
        raise host_error(exc, shown, "remove") from exc


def read_bounded(fd: int, limit: int, *, what: str, too_big: ErrorFactory) -> bytes:
    """All of a regular file, refused with ``too_big`` when it holds more than ``limit`` bytes."""

    def refuse(size: int | None) -> KitError:
        if size is None:
            return too_big(f"{what}: more than the {limit} bytes allowed")
        return too_big(f"{what}: {size} bytes, more than the {limit} allowed")

    try:
        return inputfile.read_bounded(fd, limit, refuse)
    except OSError as exc:
        raise host_error(exc, what, "read") from exc
