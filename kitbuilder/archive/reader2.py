"""Reading format-2 kits: frames by digest, members inside them, and the whole stream on all cores.

A format-2 frame is read as one piece: its compressed bytes (``length`` of them, at
``offset``) are hashed and compared with the digest the index gives (for payload frames
the index's frames equal the signed manifest's, checked before any of this runs), then
decoded by the strict frame reader (``zstdframes.FrameReader``: no dictionary, window
cap, declared size, exactly one frame spanning exactly ``length`` bytes) into exactly
``size`` bytes. Members are then cut out of the decoded frames under the same member
rules as format 1 (``check_header``), content digests compared last, so a consumer
never completes with bytes that were not checked.

``scan`` reads the file once from byte 0 to the index, in frame order, and decodes and
checks frames on a bounded pool of worker threads, consuming results in order: what
``zstd -dc | tar -x`` would produce is what is checked, and memory stays flat.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder import faults
from kitbuilder.archive import layout, tarfmt, zstdframes
from kitbuilder.archive.index import KitIndex, MemberSpan
from kitbuilder.archive.pool import OrderedPool, usable_cores
from kitbuilder.core import paths
from kitbuilder.core.manifest import FrameEntry
from kitbuilder.errors import ArchiveError, IntegrityError

# Bytes (compressed and decoded) the scan keeps in flight across its workers.
_INFLIGHT = 32 << 20


def _frame_words(against: str) -> str:
    return "their signed digest" if against == "signed" else "the index's frame digest"


def decode_frame(
    compressed: bytes, frame: FrameEntry, number: int, *, max_window: int, against: str = "index"
) -> bytes:
    """The decoded bytes of frame ``number``, checked: digest first, then one strict zstd frame of ``size`` bytes.

    IntegrityError when the compressed bytes are not the ones whose digest is given (an altered kit);
    ArchiveError for a frame that is malformed, longer or shorter than listed, or decodes to another size.
    """
    what = f"frame {number} at offset {frame.offset}"
    if len(compressed) != frame.length:
        raise ArchiveError(
            f"archive truncated at offset {frame.offset + len(compressed)}: {what} needs {frame.length} bytes"
        )
    if hashlib.sha256(compressed).hexdigest() != frame.sha256:
        raise IntegrityError(f"{what}: compressed bytes differ from {_frame_words(against)}")
    return zstdframes.decode_whole(compressed, size=frame.size, max_window=max_window, what=what)


def read_frame(stream: BinaryIO, frame: FrameEntry, number: int, *, max_window: int, against: str = "index") -> bytes:
    stream.seek(frame.offset)
    return decode_frame(stream.read(frame.length), frame, number, max_window=max_window, against=against)


# Who said what about a member, by where the expectation comes from (the signed manifest or only the index): it
# changes the wording of errors and one exit code (a member at the place of another is an index fault [5] when the
# index placed it, an altered kit [4] when the signed manifest did; docs/format.md §8.2, §8.9).
_PLACER = {"signed": "the signed index", "index": "the index"}
_SIZE_WORDS = {"signed": "signed size is", "index": "index says"}


def check_parsed_header(
    header: tarfmt.MemberHeader,
    *,
    path: str,
    size: int,
    against: str,
    found: str,
    placed: str,
    label: str,
    seen: dict[str, str] | None = None,
) -> None:
    """The one check of a parsed tar header against the member expected there (both formats, every reader).

    ``found`` says where the header was read (``at offset 123``), ``placed`` where the placer put ``path``
    (``there``); ``seen`` (when given) claims the header's path first, so two names that collide on a
    filesystem are refused in order. The mtime rule differs by format: the callers check it.
    """
    if seen is not None:
        clash = paths.claim(header.path, seen)
        if clash is not None:
            raise ArchiveError(f"member {header.path}: {clash}")
    if header.path != path:
        error = IntegrityError if against == "signed" else ArchiveError
        raise error(f"{header.path}: found {found}, expected {path} ({_PLACER[against]} says {path} {placed})")
    if header.size != size:
        raise IntegrityError(f"{label}: tar header says {header.size} bytes, {_SIZE_WORDS[against]} {size}")


def check_padding(data: bytes, label: str) -> None:
    """Tar padding must be zero bytes (both formats, every reader)."""
    if data.count(0) != len(data):
        raise ArchiveError(f"{label}: non-zero bytes in tar padding")


def check_member(
    block: bytes,
    span: MemberSpan,
    *,
    against: str,
    seen: dict[str, str] | None = None,
) -> tarfmt.MemberHeader:
    """The member's 512-byte header under the member rules, naming the expected path and size; mtime must be 0.

    A format-2 header is exactly the one the writer makes for the expected path and size, so the common case is
    one comparison with that; anything else is parsed under every rule to name what is wrong.
    """
    expected = tarfmt.build_header(span.path, span.size, 0)
    if seen is None and block == expected:
        problem = paths.problem_with(span.path)
        if problem is None:
            return tarfmt.MemberHeader(path=span.path, size=span.size, mode=tarfmt.FILE_MODE, mtime=0)
    header = tarfmt.parse_header(block, offset=span.stream_offset)
    found = f"in frame {span.frame} at byte {span.at}"
    label = f"member {span.path}"
    check_parsed_header(
        header, path=span.path, size=span.size, against=against, found=found, placed="there", label=label, seen=seen
    )
    if header.mtime != 0:
        raise ArchiveError(f"member {span.path}: tar header mtime {header.mtime}, format 2 writes 0")
    if block != expected:
        # Every field parse_header accepts is the writer's, so only a path split another way (prefix/name) is left.
        raise ArchiveError(f"member {span.path}: tar header is not the one kits write for this path")
    return header


def _content_mismatch(span: MemberSpan, observed: str, against: str) -> IntegrityError:
    whose = "the signed one" if against == "signed" else "the index"
    return IntegrityError(
        f"member {span.path}: sha256 differs from {whose}: expected sha256 {span.sha256}, got {observed}"
    )


def check_in_frame(decoded: bytes, span: MemberSpan, *, against: str, seen: dict[str, str] | None = None) -> None:
    """A member lying wholly in one decoded frame: header checked, padding zero, content digest compared.

    The content is hashed in place (a view, not a copy): a frame may decode to 64 MiB.
    """
    at = span.at
    check_member(decoded[at : at + tarfmt.BLOCK], span, against=against, seen=seen)
    start = at + tarfmt.BLOCK
    check_padding(decoded[start + span.size : start + layout.padded(span.size)], f"member {span.path}")
    with memoryview(decoded) as view:
        observed = hashlib.sha256(view[start : start + span.size]).hexdigest()
    if observed != span.sha256:
        raise _content_mismatch(span, observed, against)


def span_chunks(stream: BinaryIO, span: MemberSpan, *, max_window: int, against: str = "index") -> Iterator[bytes]:
    """The content of one member found through the index, in non-empty pieces, every check done before the last."""
    first = read_frame(stream, span.frames[0], span.frame, max_window=max_window, against=against)
    if len(span.frames) == 1:
        check_in_frame(first, span, against=against)
        start = span.at + tarfmt.BLOCK
        if span.size:
            yield first[start : start + span.size]
        return
    check_member(first, span, against=against)
    digest = hashlib.sha256()
    left = span.size
    held = b""
    for number, frame in enumerate(span.frames[1:], start=span.frame + 1):
        decoded = read_frame(stream, frame, number, max_window=max_window, against=against)
        take = min(left, len(decoded))
        piece = decoded[:take] if take < len(decoded) else decoded
        if take < len(decoded):
            check_padding(decoded[take:], f"member {span.path}")
        left -= take
        if piece:
            digest.update(piece)
        if held:
            yield held
        held = piece
    observed = digest.hexdigest()
    if observed != span.sha256:
        raise _content_mismatch(span, observed, against)
    if held:
        yield held


# ------------------------------------------------------------------------------------------------ the scan


class _Chain:
    """A large member's content digest, fed by its chunk jobs in chunk order whichever worker runs them.

    SHA-256 cannot be split across chunks, but each chunk job decodes and checks its frame in parallel with the
    others and only then waits for its turn to feed the digest: the hashing runs on the workers, next to the
    decoding of later chunks, and no decoded chunk is kept for another thread. The executor starts jobs in
    submission order, so the chunk a job waits for has always started: no job waits for one that cannot run.
    """

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self._turn = 0
        self._abandoned = False
        self._moved = threading.Condition()

    def feed(self, step: int, piece: bytes | None) -> None:
        """Wait until chunks before ``step`` have fed, feed ``piece`` (None: this chunk failed, skip it), move on."""
        with self._moved:
            while self._turn != step and not self._abandoned:
                self._moved.wait()
            if self._abandoned:
                return
        try:
            if piece:
                self.digest.update(piece)
        finally:
            with self._moved:
                self._turn += 1
                self._moved.notify_all()

    def abandon(self) -> None:
        """The scan stopped: a chunk before some waiting one may never run (its job cancelled), so stop waiting."""
        with self._moved:
            self._abandoned = True
            self._moved.notify_all()


@dataclass(frozen=True)
class _Job:
    """One frame of the scan: the members it holds whole, or the large member it is the header or a chunk of."""

    number: int
    frame: FrameEntry
    whole: tuple[MemberSpan, ...] = ()
    header_of: MemberSpan | None = None
    chunk_of: MemberSpan | None = None
    data_before: int = 0  # chunk: content bytes of the member in earlier chunks
    chain: _Chain | None = None  # chunk: its member's digest
    step: int = 0  # chunk: its number within the member


@dataclass
class _Result:
    job: _Job
    decoded: bytes | None  # kept only when the main thread writes the bytes (extraction)


def _plan(index: KitIndex, chains: list[_Chain]) -> Iterator[_Job]:
    """Each frame's job, in frame order, made as the scan reaches it: the members tile the frames in order (checked
    when the index was built), so no span of every member is held at once. ``chains`` collects the large members'
    digest chains (for ``abandon``)."""
    frames = index.frames
    whole: list[MemberSpan] = []
    current = -1
    for span in index.iter_spans():
        if len(span.frames) == 1:
            if span.frame != current and whole:
                yield _Job(current, frames[current], whole=tuple(whole))
                whole = []
            current = span.frame
            whole.append(span)
            continue
        if whole:
            yield _Job(current, frames[current], whole=tuple(whole))
            whole = []
        chain = _Chain()
        chains.append(chain)
        yield _Job(span.frame, span.frames[0], header_of=span)
        before = 0
        for step, frame in enumerate(span.frames[1:]):
            yield _Job(span.frame + 1 + step, frame, chunk_of=span, data_before=before, chain=chain, step=step)
            before += frame.size
    if whole:
        yield _Job(current, frames[current], whole=tuple(whole))


def _run_job(job: _Job, compressed: bytes, max_window: int, keep: bool) -> Callable[[], _Result]:
    def run() -> _Result:
        if job.chunk_of is not None:
            return _run_chunk(job, compressed, max_window, keep)
        decoded = decode_frame(compressed, job.frame, job.number, max_window=max_window, against="signed")
        for span in job.whole:
            check_in_frame(decoded, span, against="signed")
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
    """The in-order half of the scan: claims each path, extracts, and compares a large member's digest at its end."""

    def __init__(
        self,
        on_bytes: Callable[[int], None] | None,
        extract_to: Path | None,
        extract_only: Callable[[str], bool] | None,
    ) -> None:
        self._on_bytes = on_bytes
        self._extract_to = extract_to
        self._extract_only = extract_only
        self.seen: dict[str, str] = {}
        self.members = 0
        self.payload = 0
        self._sink: BinaryIO | None = None  # the large member being extracted

    def _extracted(self, path: str) -> bool:
        return self._extract_to is not None and (self._extract_only is None or self._extract_only(path))

    def _member(self, span: MemberSpan) -> None:
        clash = paths.claim(span.path, self.seen)
        if clash is not None:
            raise ArchiveError(f"member {span.path}: {clash}")
        self.members += 1
        self.payload += span.size

    def __call__(self, result: _Result) -> None:
        job = result.job
        for span in job.whole:
            self._member(span)
            if self._extract_to is not None and self._extracted(span.path):
                assert result.decoded is not None
                start = span.at + tarfmt.BLOCK
                _write_member(self._extract_to, span.path, result.decoded[start : start + span.size])
            if self._on_bytes is not None and span.size:
                self._on_bytes(span.size)
        if job.header_of is not None:
            span = job.header_of
            self._member(span)
            if self._extract_to is not None and self._extracted(span.path):
                self._sink = _create_member_file(self._extract_to, span.path)
        if job.chunk_of is not None:
            self._chunk(job, result.decoded)

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
            observed = job.chain.digest.hexdigest()  # every chunk fed it before its result was handed out
            if observed != span.sha256:
                raise _content_mismatch(span, observed, "signed")

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
) -> Scanned:
    """Read the kit from byte 0 to the index once, decoding and checking every frame (on worker threads).

    Every member is checked against ``index`` (whose payload part the caller has matched with the signed
    manifest): header, size, mtime 0, padding, content digest; every path is claimed in order (no two
    names that collide on a filesystem). With ``extract_to`` (a fresh, empty directory) each member is
    written there as its frame is consumed (those ``extract_only`` accepts); on error the caller discards it.
    """
    workers = usable_cores() if threads is None else threads
    consume = _Consumer(on_bytes, extract_to, extract_only)
    stream.seek(0)
    chains: list[_Chain] = []
    jobs = _plan(index, chains)
    try:
        with OrderedPool[_Result](workers, max_inflight=_INFLIGHT) as pool:
            try:
                _feed(stream, jobs, pool, consume, max_window, keep=extract_to is not None)
            except BaseException:
                # The pool cancels the jobs not yet started; a chunk job already waiting for one of them must not
                # wait forever (the pool waits for the running ones when it closes).
                for chain in chains:
                    chain.abandon()
                raise
        _check_end(stream, index, index_offset, max_window)
    finally:
        consume.close()
    return Scanned(members=consume.members, payload_bytes=consume.payload)


def _feed(
    stream: BinaryIO, jobs: Iterator[_Job], pool: OrderedPool[_Result], consume: _Consumer, max_window: int, keep: bool
) -> None:
    """Read each frame in file order, hand it to the pool, and consume the results in the same order."""
    for job in jobs:
        faults.point("scan-frame")  # frames before it are in flight on the workers
        compressed = stream.read(job.frame.length)
        if len(compressed) != job.frame.length:
            # The file shrank under us: the frames before it are still in flight, and one of them may hold
            # the first fault in file order, which is the one to report.
            for result in pool.drain():
                consume(result)
            raise ArchiveError(
                f"archive truncated at offset {job.frame.offset + len(compressed)}: frame {job.number} "
                f"needs {job.frame.length} bytes"
            )
        for result in pool.submit(_run_job(job, compressed, max_window, keep), job.frame.length + job.frame.size):
            consume(result)
        for result in pool.take_done():
            consume(result)
    for result in pool.drain():
        consume(result)


def _check_end(stream: BinaryIO, index: KitIndex, index_offset: int, max_window: int) -> None:
    """After the payload and metadata frames: the end-of-archive frame, then the index straight after it."""
    end = index.frames[index.end]
    compressed = stream.read(end.length)
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


def _write_member(root: Path, member: str, data: bytes) -> None:
    with _create_member_file(root, member) as sink:
        sink.write(data)


def frames_of(index: KitIndex, spans: Sequence[MemberSpan]) -> list[int]:
    """The numbers of the frames that hold ``spans`` (for copying them verbatim), in order, once each."""
    out: list[int] = []
    for span in spans:
        for number in range(span.frame, span.frame + len(span.frames)):
            if not out or out[-1] != number:
                out.append(number)
    return out
