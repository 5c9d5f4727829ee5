"""The work the format-2 writer hands to its worker threads: one job per frame, returning the frame ready to write.

Each job makes (or takes) one independent zstd frame: it hashes the content of a group's small members, lays
out their tar bytes and compresses them (or takes the frame a reuse source offers for them); or compresses a
large member's chunk; or checks a frame offered verbatim. Everything a job does releases the GIL (SHA-256,
libzstd) except a little bookkeeping per member, so frames are made on all cores. The writer
(``writer2.KitWriter2``) submits jobs in archive order and writes their results in the same order, so the
output never depends on how many threads ran them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import zstandard

from kitbuilder.archive import layout, tarfmt, zstdframes
from kitbuilder.errors import ArchiveError, IntegrityError, UsageError

# A reused frame is decoded whole into a buffer of its known size; the window does not add to that.
_REUSE_WINDOW = layout.MAX_FRAME_SIZE


@dataclass(frozen=True)
class Verbatim:
    """A compressed frame offered for reuse, the digest it must have (the signed one), and what to say if it does
    not decode to the bytes the build would compress there (the source listed it under content it does not hold).
    """

    data: bytes
    sha256: str
    mismatch: str = "the offered frame does not decode to the bytes this build writes there"


class FrameReuse(Protocol):
    """Where a build may take frames from instead of compressing (a verified base kit). Called from worker threads."""

    def group(self, members: tuple[tuple[str, int, str], ...]) -> Verbatim | None:
        """A frame holding exactly these members ((path, size, sha256) in order), or None."""

    def chunk(self, sha256: str, size: int, number: int) -> Verbatim | None:
        """Data frame ``number`` of a large member with this content, or None."""


@dataclass(slots=True)
class Record:
    """A member as placed; ``sha256`` is filled in when its digest is known."""

    path: str
    frame: int
    at: int
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Done:
    """A frame ready to be written, in order: compressed bytes, their digest, decompressed size."""

    data: bytes
    sha256: str
    size: int
    fill: tuple[tuple[Record, str], ...] = ()  # member digests computed by the job


_local = threading.local()


def _compressor(level: int) -> Any:
    """This thread's compressor (a ZstdCompressor is not safe to share between threads)."""
    cached = getattr(_local, "compressors", None)
    if cached is None:
        cached = _local.compressors = {}
    compressor = cached.get(level)
    if compressor is None:
        compressor = cached[level] = zstandard.ZstdCompressor(
            level=level, threads=0, write_checksum=True, write_content_size=True, write_dict_id=False
        )
    return compressor


def compress_frame(data: bytes, level: int) -> bytes:
    """One independent zstd frame of ``data`` as every format-2 frame is made (the same bytes on any thread)."""
    return bytes(_compressor(level).compress(data))


def raw_frame(data: bytes) -> bytes:
    return zstdframes.raw_frame(data)


def shrank(path: str) -> UsageError:
    return UsageError(f"{path}: input shrank while being read (expected more bytes); rerun the build")


def grew(path: str, size: int) -> UsageError:
    return UsageError(f"{path}: input grew while being read (expected {size} bytes); rerun the build")


def read_exact(source: BinaryIO, size: int, path: str, *, more: bool = False) -> bytes:
    """``size`` bytes from ``source``; UsageError if it ends early, or (unless ``more``) has more."""
    data = source.read(size) if size else b""
    while len(data) < size:
        chunk = source.read(size - len(data))
        if not chunk:
            raise shrank(path)
        data += chunk
    if not more and size < layout.LARGE and source.read(1):
        raise grew(path, size)
    return data


class Load(Protocol):
    """Reads a small member's source on a worker thread, when its group frame is made (``KitWriter2.add_later``).

    Returns the source's first ``size + 1`` bytes (all of it when shorter: fewer than ``size`` means it shrank,
    ``size + 1`` that it grew, and the job refuses either), or raises UsageError naming the source. ``key`` is the
    caller's, given back as it was passed. Called from several threads at once.
    """

    def __call__(self, key: int, path: str, size: int) -> bytes: ...


def loaded(load: Load, key: int, path: str, size: int) -> bytes:
    """A deferred member's bytes, exactly ``size`` of them; UsageError (as ``read_exact``) if it changed size."""
    data = load(key, path, size)
    if len(data) != size:
        raise shrank(path) if len(data) < size else grew(path, size)
    return data


def group_raw(members: list[tuple[Record, bytes]]) -> bytes:
    """The tar bytes of a group frame: each member's header, data and zero padding, back to back."""
    parts: list[bytes] = []
    for record, data in members:
        parts.append(tarfmt.build_header(record.path, record.size, 0))
        parts.append(data)
        pad = layout.padded(record.size) - record.size
        if pad:
            parts.append(bytes(pad))
    return b"".join(parts)


def framed(raw: bytes, level: int, store: bool = False) -> Done:
    frame = raw_frame(raw) if store else compress_frame(raw, level)
    return Done(frame, hashlib.sha256(frame).hexdigest(), len(raw))


def reused(found: Verbatim, raw: bytes, what: str) -> Done:
    """A frame offered for reuse, written only if it is the signed one *and* decodes to exactly ``raw``.

    The reuse source vouches for a frame by its signed digest and its signed map (which members, which chunk), but
    a signature says who made a kit, not that its frames hold what its manifest lists: a base whose map says other
    than its frames hold would otherwise put those bytes under this build's signature. So the frame is decoded
    here, once, on the worker, and compared with the bytes this build would compress; a frame that differs is the
    source's fault (IntegrityError with its ``mismatch`` words), never silently replaced.
    """
    if hashlib.sha256(found.data).hexdigest() != found.sha256:
        raise IntegrityError(f"{what}: compressed bytes differ from their signed digest; not copied")
    try:
        same = zstdframes.decode_whole(found.data, size=len(raw), max_window=_REUSE_WINDOW, what=what) == raw
    except ArchiveError:
        same = False
    if not same:
        raise IntegrityError(found.mismatch)
    return Done(found.data, found.sha256, len(raw))


def load_members(members: list[tuple[Record, bytes | int]], load: Load | None) -> list[tuple[Record, bytes]]:
    """The members with each deferred one (its key in place of its bytes) read, in order: the first fault is the
    first member's."""
    ready: list[tuple[Record, bytes]] = []
    for record, data in members:
        if not isinstance(data, bytes):
            assert load is not None
            data = loaded(load, data, record.path, record.size)
        ready.append((record, data))
    return ready


def group_job(
    members: list[tuple[Record, bytes | int]], level: int, reuse: FrameReuse | None, load: Load | None = None
) -> Callable[[], Done]:
    """A group frame: read the members given by key (``load``, in order, so the first fault is the first member's),
    hash them, then take the frame from ``reuse`` (checked) or compress it. All of it on the worker: reading and
    SHA-256 release the GIL, so a build of many small files reads and hashes on every core."""

    def run() -> Done:
        ready = load_members(members, load)
        members.clear()
        fill = tuple((record, hashlib.sha256(data).hexdigest()) for record, data in ready)
        raw = group_raw(ready)
        ready.clear()  # this job holds the only reference: the members' bytes now live on in ``raw`` alone
        if reuse is not None:
            found = reuse.group(tuple((r.path, r.size, digest) for r, digest in fill))
            if found is not None:
                done = reused(found, raw, f"group frame of {fill[0][0].path}")
                return Done(done.data, done.sha256, done.size, fill)
        done = framed(raw, level)
        return Done(done.data, done.sha256, done.size, fill)

    return run


def frame_job(raw: bytes, level: int, store: bool = False) -> Callable[[], Done]:
    return lambda: framed(raw, level, store)


def chunk_job(found: Verbatim | None, raw: bytes, level: int, store: bool, what: str) -> Callable[[], Done]:
    """A large member's chunk: the reuse source's frame for it (checked) or ``raw`` compressed (or stored)."""
    if found is None:
        return frame_job(raw, level, store)
    return lambda: reused(found, raw, what)


def verbatim_job(data: bytes, size: int, sha256: str, what: str) -> Callable[[], Done]:
    def run() -> Done:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"{what}: compressed bytes differ from their signed digest; not copied")
        return Done(data, sha256, size)

    return run


def range_job(fd: int, offset: int, length: int, size: int, sha256: str, what: str) -> Callable[[], Done]:
    def run() -> Done:
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise IntegrityError(f"{what}: source ends inside the frame (wanted {length} bytes at offset {offset})")
        return verbatim_job(data, size, sha256, what)()

    return run


def metadata_frames(path: str, size: int, pieces: Iterable[bytes], chunk: int = layout.CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of each frame a metadata member ``path`` of ``size`` bytes (given in ``pieces``) is
    written as: ``KitWriter2.add_metadata_stream``'s layout, for writers that compress frames themselves
    (``kit patch``, a delta's ``delta/target/`` members). ValueError unless the pieces hold ``size`` bytes."""
    if not layout.is_large(size) and layout.padded(size) <= chunk:
        data = b"".join(pieces)
        if len(data) != size:
            raise ValueError(f"{path}: {len(data)} bytes given for a member of {size}")
        yield tarfmt.build_header(path, size, 0) + data + bytes(layout.padded(size) - size)
        return
    yield tarfmt.build_header(path, size, 0)
    held = bytearray()
    seen = 0
    for piece in pieces:
        seen += len(piece)
        if seen > size:
            raise ValueError(f"{path}: more than the {size} bytes announced")
        with memoryview(piece) as view:
            start = 0
            if held:
                start = min(chunk - len(held), len(view))
                held += view[:start]
                if len(held) == chunk:
                    yield bytes(held)
                    held = bytearray()
            while len(view) - start >= chunk:
                yield bytes(view[start : start + chunk])
                start += chunk
            held += view[start:]
    if seen != size:
        raise ValueError(f"{path}: {seen} bytes given for a member of {size}")
    held += bytes(layout.padded(size) - size)
    if held:
        yield bytes(held)
