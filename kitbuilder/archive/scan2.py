"""The streaming check of a format-2 kit: the whole file from byte 0 to the index, on all cores.

``scan`` reads the file once from byte 0 to the index, in frame order, and decodes and
checks frames on a bounded pool of worker threads, consuming results in order: what
``zstd -dc | tar -x`` would produce is what is checked, and memory stays flat. Each job
reads its own frame (``os.pread`` on the one descriptor, so the calling thread only plans,
claims paths and writes extracted files) and, in frame order, feeds the whole file's
digest from the bytes it just read: every byte is read once and stays on one core.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from kitbuilder import faults
from kitbuilder.archive import layout, tarfmt
from kitbuilder.archive.index import KitIndex, MemberEntry, MemberSpan
from kitbuilder.archive.pool import OrderedPool, usable_cores
from kitbuilder.archive.reader2 import check_group, check_member, check_padding, content_mismatch, decode_frame
from kitbuilder.core import paths
from kitbuilder.core.manifest import FrameEntry
from kitbuilder.errors import ArchiveError

# Bytes (compressed and decoded) the scan keeps in flight, per worker thread and at least: a 4 MiB chunk costs up to
# 8 MiB (its compressed and decoded bytes), and two per worker (one being worked on, one whose piece waits for its
# digest's turn) keep every core busy.
_INFLIGHT_PER_WORKER = 16 << 20
_INFLIGHT_MIN = 32 << 20


class _Chain:
    """A digest fed by jobs in their order whichever worker runs them: a large member's content digest (fed by its
    chunk jobs, in chunk order), or the whole file's (fed by every frame job, in frame order, with the bytes it read).

    SHA-256 cannot be split across chunks, so pieces are fed in order, but a job seldom waits for its turn: one
    whose piece cannot be fed yet leaves it here and goes on (its next frame), and the job whose turn it is feeds
    its own piece and then every later one already left, in order. A worker that waited for its turn sat idle
    while the job before it was decoded or preempted: on two cores, most of the time the scan lost. Only
    ``SLACK`` pieces may wait here (each may be a decoded 4 MiB chunk); a job finding that many waits for its turn,
    as every job did before, so memory grows by at most that much. The executor starts jobs in submission order,
    so the job holding the turn has always started: no job waits for one that cannot run. Every piece up to a
    job's own is fed before any later result can be taken: the job that feeds it is an earlier one or this one,
    and the pool hands results out in order.
    """

    SLACK = 2

    def __init__(self, digest: Any = None) -> None:
        self.digest = hashlib.sha256() if digest is None else digest
        self._turn = 0
        self._left: dict[int, bytes | None] = {}
        self._feeding = False
        self._abandoned = False
        self._moved = threading.Condition()

    def feed(self, step: int, piece: bytes | None) -> None:
        """Feed ``piece`` (None: this chunk failed, skip it) at ``step``, now or by the job holding the turn."""
        with self._moved:
            while step != self._turn and len(self._left) >= self.SLACK and not self._abandoned:
                self._moved.wait()
            if self._abandoned:
                return
            self._left[step] = piece
            if self._feeding or step != self._turn:
                return  # whoever holds the turn feeds it when it comes
            self._feeding = True
        while True:
            with self._moved:
                # Checked and given up in one step: a piece left after this finds the turn free and feeds itself.
                if self._abandoned or self._turn not in self._left:
                    self._feeding = False
                    self._moved.notify_all()
                    return
                piece = self._left.pop(self._turn)
            try:
                if piece:
                    self.digest.update(piece)  # outside the lock: hashing releases the GIL
            except BaseException:
                self.abandon()  # the digest is unusable; the job raising this fails the scan
                raise
            with self._moved:
                self._turn += 1
                self._moved.notify_all()

    def abandon(self) -> None:
        """The scan stopped: a job before some waiting one may never run (its job cancelled), so stop waiting, and
        drop what is left: nothing more is fed."""
        with self._moved:
            self._abandoned = True
            self._left.clear()
            self._moved.notify_all()


@dataclass(frozen=True)
class _Job:
    """One frame of the scan: the members it holds whole, or the large member it is the header or a chunk of.

    One value per frame, never one per member: a group frame's members are the index's own entries, checked by one
    call on a worker (``reader2.check_group``). Paths are claimed when the job is planned, in order; a clash found
    then is kept here and raised when the job's result is consumed, after the faults of the frames before it and
    of this frame's own members, the order a consumer claiming each member after its frame's check would give.
    """

    number: int
    frame: FrameEntry
    whole: tuple[MemberEntry, ...] = ()
    start: int = 0  # where the frame lies in the decompressed tar stream
    payload: int = 0  # content bytes of the members held whole (the progress callback's step)
    header_of: MemberSpan | None = None
    chunk_of: MemberSpan | None = None
    data_before: int = 0  # chunk: content bytes of the member in earlier chunks
    chain: _Chain | None = None  # chunk: its member's digest
    step: int = 0  # chunk: its number within the member
    clash: str | None = None  # the first path-claim fault among this frame's members


@dataclass
class _Result:
    job: _Job
    decoded: bytes | None  # kept only when the main thread writes the bytes (extraction)


def _plan(index: KitIndex, chains: list[_Chain]) -> Iterator[_Job]:
    """Each frame's job, in frame order, made as the scan reaches it: the members tile the frames in order (checked
    when the index was built), so no span of every member is held at once. Every path is claimed here, in order
    (no two that collide on a filesystem); planning stops after the frame holding the first clash. ``chains``
    collects the large members' digest chains (for ``abandon``)."""
    frames = index.frames
    starts = index.stream_starts()
    members = cast("Sequence[MemberEntry]", index.members)  # format 2: check_tiling placed them all
    seen: dict[str, str] = {}
    claim, block = paths.claim, tarfmt.BLOCK
    whole: list[MemberEntry] = []
    current, payload, clash = -1, 0, None
    for member in members:
        number = member.frame
        # layout.member_bytes inlined (this runs once per member): header, data, padding within the frame.
        held_whole = member.at + block + (member.size + block - 1) // block * block <= frames[number].size
        if whole and (number != current or not held_whole):
            yield _Job(current, frames[current], tuple(whole), starts[current], payload, clash=clash)
            if clash is not None:
                return
            whole, payload = [], 0
        if clash is None and (problem := claim(member.path, seen)) is not None:
            clash = f"member {member.path}: {problem}"
        if held_whole:
            current = number
            whole.append(member)
            payload += member.size
            continue
        span = index.span_of(member, starts[number] + member.at)
        yield _Job(number, frames[number], start=starts[number], header_of=span, clash=clash)
        if clash is not None:
            return
        chain = _Chain()
        chains.append(chain)
        before = 0
        for step, frame in enumerate(span.frames[1:]):
            yield _Job(number + 1 + step, frame, chunk_of=span, data_before=before, chain=chain, step=step)
            before += frame.size
    if whole:
        yield _Job(current, frames[current], tuple(whole), starts[current], payload, clash=clash)


ReadAt = Callable[[int, int], bytes]


def reader_at(stream: BinaryIO) -> ReadAt:
    """``read_at(offset, length)``: up to ``length`` bytes of ``stream`` at ``offset`` (fewer only at its end),
    callable from any thread: ``os.pread`` on its descriptor, or (a stream without one) a locked seek and read."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        lock = threading.Lock()

        def locked(offset: int, length: int) -> bytes:
            with lock:
                stream.seek(offset)
                return stream.read(length)

        return locked

    def pread(offset: int, length: int) -> bytes:
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data
        parts = [data]  # a regular file returns less only at its end; a read over 2 GiB is cut by the kernel
        got = len(data)
        while got < length and (more := os.pread(fd, length - got, offset + got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    return pread


def _run_job(
    job: _Job, read_at: ReadAt, file_chain: _Chain | None, max_window: int, keep: bool
) -> Callable[[], _Result]:
    def run() -> _Result:
        compressed = b""
        try:
            compressed = read_at(job.frame.offset, job.frame.length)
        finally:
            if file_chain is not None:
                file_chain.feed(job.number, compressed)  # a failed read still passes its turn
        if len(compressed) != job.frame.length:
            raise ArchiveError(
                f"archive truncated at offset {job.frame.offset + len(compressed)}: frame {job.number} "
                f"needs {job.frame.length} bytes"
            )
        if job.chunk_of is not None:
            return _run_chunk(job, compressed, max_window, keep)
        decoded = decode_frame(compressed, job.frame, job.number, max_window=max_window, against="signed")
        if job.whole:
            check_group(decoded, job.whole, job.number, job.start, against="signed")
        if job.header_of is not None:
            check_member(decoded, job.header_of, against="signed")
        return _Result(job, decoded if keep else None)

    return run


def _run_chunk(job: _Job, compressed: bytes, max_window: int, keep: bool) -> _Result:
    """A chunk frame: decoded and its padding checked, then its content fed to the member's digest in turn."""
    assert job.chunk_of is not None and job.chain is not None
    span, piece = job.chunk_of, None
    try:
        decoded = decode_frame(compressed, job.frame, job.number, max_window=max_window, against="signed")
        take = max(0, min(span.size - job.data_before, len(decoded)))
        if take < len(decoded):
            check_padding(decoded[take:], f"member {span.path}")
        piece = decoded[:take] if take < len(decoded) else decoded
    finally:
        job.chain.feed(job.step, piece)  # a failed chunk still passes its turn, so later ones never wait forever
    return _Result(job, piece if keep else None)


@dataclass(frozen=True)
class Scanned:
    members: int
    payload_bytes: int


class _Consumer:
    """The in-order half of the scan: counts, raises a planned path clash, extracts, and compares a large member's
    digest at its end. Verifying only, it does nothing per member: the workers checked them, the planner claimed
    their paths."""

    def __init__(
        self,
        on_bytes: Callable[[int], None] | None,
        extract_to: Path | None,
        extract_only: Callable[[str], bool] | None,
    ) -> None:
        self._on_bytes = on_bytes
        self._extract_to = extract_to
        self._extract_only = extract_only
        self.members = 0
        self.payload = 0
        self._sink: BinaryIO | None = None  # the large member being extracted

    def _extracted(self, path: str) -> bool:
        return self._extract_to is not None and (self._extract_only is None or self._extract_only(path))

    def __call__(self, result: _Result) -> None:
        job = result.job
        if job.clash is not None:
            raise ArchiveError(job.clash)
        if job.whole:
            self.members += len(job.whole)
            self.payload += job.payload
            if self._extract_to is not None:
                assert result.decoded is not None
                self._extract(self._extract_to, job.whole, result.decoded)
            if self._on_bytes is not None and job.payload:
                self._on_bytes(job.payload)
        if job.header_of is not None:
            span = job.header_of
            self.members += 1
            self.payload += span.size
            if self._extracted(span.path):
                assert self._extract_to is not None
                self._sink = _create_member_file(self._extract_to, span.path)
        if job.chunk_of is not None:
            self._chunk(job, result.decoded)

    def _extract(self, root: Path, members: tuple[MemberEntry, ...], decoded: bytes) -> None:
        with memoryview(decoded) as view:
            for member in members:
                if self._extracted(member.path):
                    start = member.at + tarfmt.BLOCK
                    _write_member(root, member.path, view[start : start + member.size])

    def _chunk(self, job: _Job, piece: bytes | None) -> None:
        assert job.chunk_of is not None and job.chain is not None
        span = job.chunk_of
        if self._sink is not None and piece:
            self._sink.write(piece)
        done = min(span.size - job.data_before, job.frame.size)
        if self._on_bytes is not None and done > 0:
            self._on_bytes(done)
        if job.data_before + job.frame.size >= layout.padded(span.size):
            self.close()
            observed = job.chain.digest.hexdigest()  # every chunk is fed before a later result is handed out
            if observed != span.sha256:
                raise content_mismatch(span, observed, "signed")

    def close(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close()


def scan(
    stream: BinaryIO,
    index: KitIndex,
    index_offset: int,
    *,
    max_window: int,
    on_bytes: Callable[[int], None] | None = None,
    extract_to: Path | None = None,
    extract_only: Callable[[str], bool] | None = None,
    threads: int | None = None,
    file_digest: Any = None,
) -> Scanned:
    """Read the kit from byte 0 to the index once, decoding and checking every frame (on worker threads).

    Every member is checked against ``index`` (whose payload part the caller has matched with the signed
    manifest): header, size, mtime 0, padding, content digest; every path is claimed in order (no two
    names that collide on a filesystem). With ``extract_to`` (a fresh, empty directory) each member is
    written there as its frame is consumed (those ``extract_only`` accepts); on error the caller discards it.
    With ``file_digest`` (a hashlib object) every byte before the index is fed to it, in order, from the same reads
    (the frames tile the file from byte 0: ``KitIndex.check_tiling``).
    """
    workers = usable_cores() if threads is None else threads
    consume = _Consumer(on_bytes, extract_to, extract_only)
    read_at = reader_at(stream)
    chains: list[_Chain] = []
    jobs = _plan(index, chains)
    file_chain = None if file_digest is None else _Chain(file_digest)
    try:
        inflight = max(_INFLIGHT_MIN, workers * _INFLIGHT_PER_WORKER)
        with OrderedPool[_Result](workers, max_inflight=inflight) as pool:
            try:
                _feed(read_at, jobs, file_chain, pool, consume, max_window, keep=extract_to is not None)
            except BaseException:
                # The pool cancels the jobs not yet started; a job already waiting for the turn of one of them must
                # not wait forever (the pool waits for the running ones when it closes).
                for chain in chains:
                    chain.abandon()
                if file_chain is not None:
                    file_chain.abandon()
                raise
        _check_end(read_at, index, index_offset, max_window, file_digest)
    finally:
        consume.close()
    return Scanned(members=consume.members, payload_bytes=consume.payload)


def _feed(
    read_at: ReadAt,
    jobs: Iterator[_Job],
    file_chain: _Chain | None,
    pool: OrderedPool[_Result],
    consume: _Consumer,
    max_window: int,
    keep: bool,
) -> None:
    """Hand each frame's job to the pool in file order (the job reads the frame), consume results in that order.

    A read that comes back short (the file shrank under us) fails its own job, so the faults of the frames before
    it, still in flight, are reported first, in file order.
    """
    for job in jobs:
        faults.point("scan-frame")  # frames before it are in flight on the workers
        run = _run_job(job, read_at, file_chain, max_window, keep)
        for result in pool.submit(run, job.frame.length + job.frame.size):
            consume(result)
        for result in pool.take_done():
            consume(result)
    for result in pool.drain():
        consume(result)


def _check_end(read_at: ReadAt, index: KitIndex, index_offset: int, max_window: int, file_digest: Any) -> None:
    """After the payload and metadata frames: the end-of-archive frame, then the index straight after it."""
    end = index.frames[index.end]
    compressed = read_at(end.offset, end.length)
    if file_digest is not None:
        file_digest.update(compressed)
    if decode_frame(compressed, end, index.end, max_window=max_window) != tarfmt.END_OF_ARCHIVE:
        raise ArchiveError(f"frame {index.end}: the end-of-archive frame is not 1024 zero bytes")
    if end.offset + end.length != index_offset:
        raise ArchiveError(f"{index_offset - end.offset - end.length} bytes of data after the end of the tar archive")


def _create_member_file(root: Path, member: str) -> BinaryIO:
    # The path passed the member rules (relative, no '..', portable); the root is a directory we created,
    # so O_EXCL|O_NOFOLLOW only guards against races.
    target = root.joinpath(*member.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def _write_member(root: Path, member: str, data: bytes | memoryview) -> None:
    with _create_member_file(root, member) as sink:
        sink.write(data)
