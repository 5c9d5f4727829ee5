"""Copy compressed frames from open kits into a new one, verbatim, each checked against its signed SHA-256.

``kit patch`` and ``kit build --delta-from`` assemble a kit mostly from frames
another kit already holds. A frame is never decompressed on the way: its
SHA-256 over the compressed bytes is signed, so the check is a digest of the
bytes that landed in the output.

How (measured on ext4, 2 cores; a 2 GiB copy): runs of frames that are
contiguous in one source are copied with one ``os.copy_file_range`` (no copy
through user space, no Python per byte) while worker threads hash each frame
as it now lies in the *output* (read back from the page cache through a second
descriptor of the same open file; hashlib releases the GIL). That is what was
written, not what the source held a moment earlier. When the kernel cannot
copy between the two files (another filesystem, a filesystem without
``copy_file_range``), each worker reads its frame in bounded pieces, hashes
and writes them at the frame's place. Memory is flat either way: at most a few
frames are in flight, each handled in pieces of ``PIECE`` bytes. The output is
not fsynced here: the caller fsyncs once, at the end.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kitbuilder.errors import HostIOError, IntegrityError, KitError
from kitbuilder.ops.confined import host_error

PIECE = 1 << 20
# Frames copied by one copy_file_range call at most (bounds how far copying runs ahead of hashing).
RUN_BYTES = 64 << 20
# The kernel refuses these for a pair of files it cannot copy between; anything else is the host's error.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}


@dataclass(frozen=True)
class Span:
    """One frame to copy: ``length`` bytes at ``offset`` of the open file ``source`` (read by offset only).

    ``sha256`` is the signed digest of exactly those bytes; ``name`` is what an error calls the frame
    (for example ``base.kit.tar.zst frame 12``) and ``source_name`` the file it is read from.
    """

    source: int
    offset: int
    length: int
    sha256: str
    name: str
    source_name: str


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def copy_frames(
    spans: Iterable[Span],
    out: int,
    at: int,
    *,
    out_name: str,
    threads: int = 0,
    kernel_copy: bool = True,
    on_run: Callable[[], None] | None = None,
) -> int:
    """Write every span, in order, to the descriptor ``out`` from offset ``at``; return the offset after the last.

    Each frame written is hashed and must have its span's ``sha256`` (IntegrityError naming the frame). A source
    that ends inside a frame is IntegrityError too (the file changed after it was verified); a read or write the
    host refuses is HostIOError naming the file. ``threads`` hash workers (0: one per usable core).
    ``kernel_copy=False`` forces the read/hash/write path (as when the kernel cannot copy between the files).
    ``on_run`` is called after each run of frames is handed to the kernel or the workers (kill tests hook there).
    """
    workers = threads if threads > 0 else usable_cores()
    # Closed only after the pool has stopped: hash jobs of earlier runs may still be reading through it.
    reader = _reopen_for_reading(out) if kernel_copy else None
    # Sources the kernel refused to copy from into ``out`` (another filesystem): refusal is per pair of files,
    # so a delta on a USB stick does not stop the base beside the output from being copied by the kernel.
    refused: set[int] = set()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kit-frames") as pool:
            pending: deque[tuple[Span, Future[str]]] = deque()
            try:
                position = at
                for run in _runs(spans):
                    copied = (
                        reader is not None
                        and run[0].source not in refused
                        and _kernel_copy(run, out, position, out_name)
                    )
                    for span in run:
                        if copied:
                            assert reader is not None
                            job = pool.submit(_hash_range, reader, position, span.length, out_name)
                        else:
                            job = pool.submit(_copy_piecewise, span, out, position, out_name)
                        pending.append((span, job))
                        position += span.length
                        while len(pending) > 4 * workers:
                            _check(*pending.popleft())
                    if on_run is not None:
                        on_run()
                    if not copied:
                        refused.add(run[0].source)  # it will refuse this pair of files again
                while pending:
                    _check(*pending.popleft())
                return position
            finally:
                for _, job in pending:
                    job.cancel()
    finally:
        if reader is not None:
            os.close(reader)


def _reopen_for_reading(out: int) -> int | None:
    """A second, read-only descriptor of the same open file (not of a path someone could rename), or None."""
    try:
        return os.open(f"/proc/self/fd/{out}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _runs(spans: Iterable[Span]) -> Iterator[list[Span]]:
    """Consecutive spans that lie back to back in one source, up to ``RUN_BYTES``: one kernel copy each."""
    run: list[Span] = []
    size = 0
    for span in spans:
        if run and (
            span.source != run[-1].source
            or span.offset != run[-1].offset + run[-1].length
            or size + span.length > RUN_BYTES
        ):
            yield run
            run, size = [], 0
        run.append(span)
        size += span.length
    if run:
        yield run


def _kernel_copy(run: list[Span], out: int, position: int, out_name: str) -> bool:
    """Copy ``run`` with copy_file_range; False (nothing written) when the kernel cannot copy these files."""
    first = run[0]
    total = sum(span.length for span in run)
    done = 0
    while done < total:
        try:
            count = os.copy_file_range(first.source, out, total - done, first.offset + done, position + done)
        except OSError as exc:
            if done == 0 and exc.errno in _NO_KERNEL_COPY:
                return False
            raise host_error(exc, out_name, "write") from exc
        if count == 0:
            raise _ended(_span_at(run, done), first.source_name)
        done += count
    return True


def _span_at(run: list[Span], done: int) -> Span:
    for span in run:
        if done < span.length:
            return span
        done -= span.length
    return run[-1]


def _ended(span: Span, source_name: str) -> KitError:
    return IntegrityError(
        f"{span.name}: {source_name} ends inside this frame (bytes {span.offset}..{span.offset + span.length}); "
        "the file changed after it was verified: obtain it again"
    )


def _hash_range(fd: int, offset: int, length: int, out_name: str) -> str:
    digest = hashlib.sha256()
    end = offset + length
    while offset < end:
        try:
            piece = os.pread(fd, min(PIECE, end - offset), offset)
        except OSError as exc:
            raise host_error(exc, out_name, "read") from exc
        if not piece:
            raise HostIOError(f"{out_name}: shorter than what kit just wrote to it; check the disk and rerun")
        digest.update(piece)
        offset += len(piece)
    return digest.hexdigest()


def _copy_piecewise(span: Span, out: int, position: int, out_name: str) -> str:
    digest = hashlib.sha256()
    done = 0
    while done < span.length:
        try:
            piece = os.pread(span.source, min(PIECE, span.length - done), span.offset + done)
        except OSError as exc:
            raise host_error(exc, span.source_name, "read") from exc
        if not piece:
            raise _ended(span, span.source_name)
        digest.update(piece)
        view = memoryview(piece)
        while view:
            try:
                written = os.pwrite(out, view, position + done)
            except OSError as exc:
                raise host_error(exc, out_name, "write") from exc
            view = view[written:]
            done += written
    return digest.hexdigest()


def _check(span: Span, job: Future[str]) -> None:
    got = job.result()
    if got != span.sha256:
        raise IntegrityError(
            f"{span.name}: compressed frames differ from their signed digest (expected sha256 {span.sha256[:16]}…, "
            f"got {got[:16]}…); not copied: {span.source_name} is damaged, obtain it again"
        )
