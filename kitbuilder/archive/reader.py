"""Reading kits: the index and single members by seeking, or the whole stream in one pass.

One member reader, ``member_content``, reads a member's header frame and data
frame and applies every member rule (docs/format.md §8.2, §8.9). Each way of
reading a member is a thin use of it that differs only in what it does with
the bytes: ``read_member`` joins them (small metadata members, bounded),
``read_member_to`` writes them to a new file, ``member_chunks`` hands them out
(image uploads), ``data_frame_source`` copies the compressed data frame
verbatim (delta and patch) and ``scan`` decompresses every frame from byte 0 to
the index, so what ``zstd -dc | tar -x`` would produce is what is checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from kitbuilder.archive import reader2, tarfmt, zstdframes
from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.archive.index import MIN_FRAME_BYTES, MIN_MEMBER_BYTES, KitIndex, MemberSpan
from kitbuilder.core import paths
from kitbuilder.errors import ArchiveError, IntegrityError


@dataclass(frozen=True)
class Caps:
    """Hard limits that keep a hostile kit from costing memory, disk or time."""

    max_window: int = 1 << 24
    # Every metadata budget scales with the member count an (unsigned) index claims, so this cap bounds
    # what a keyless attacker can make verify spend: at 50,000 an index at the cap parses well under
    # 150 MiB (tests/integration/test_hostile_review.py). Larger honest kits pass --max-members, paying
    # about 1.2 KiB of memory per member while the index is read.
    max_members: int = 50_000
    max_metadata: int = 64 << 20

    @property
    def max_frames(self) -> int:
        """Format 2: the most frames an index may list. Two per member of the cap covers honest kits of large
        files (a 4 MiB chunk frame each: 100,000 frames is 400 GiB at the default cap); more members, more frames.
        Members and frames together cost about what a format-1 index at the member cap does."""
        return 2 * self.max_members + 1024


@dataclass(frozen=True)
class IndexLocation:
    index: KitIndex
    index_offset: int
    file_size: int


def read_index(stream: BinaryIO, caps: Caps) -> IndexLocation:
    """Locate and parse the index through the footer; ArchiveError if the file is not a sealed kit."""
    file_size = stream.seek(0, os.SEEK_END)
    if file_size < zstdframes.FOOTER_SIZE:
        raise ArchiveError(f"kit is only {file_size} bytes: not a kit, or truncated")
    stream.seek(file_size - zstdframes.FOOTER_SIZE)
    index_offset = zstdframes.parse_footer(stream.read(zstdframes.FOOTER_SIZE))
    if index_offset >= file_size - zstdframes.FOOTER_SIZE:
        raise ArchiveError("kit footer: index offset points past the end of the file")
    # The index is one skippable frame of raw bytes, read with one read of its declared size: its cost is
    # bounded before reading (by the members the bytes before it could hold, and by twice the cap, so an
    # index a little over the cap is still parsed and the refusal below can say by how much) and before parsing.
    # Format 1: every member takes two frames of at least 9 bytes before the index. Format 2: small members share
    # frames, so members are bounded by the cap alone, frames by the bytes before the index (9 at least each).
    bound = min(2 * caps.max_members + 16, index_offset // MIN_MEMBER_BYTES)
    member_bound = caps.max_members + 16
    frame_bound = min(caps.max_frames, index_offset // MIN_FRAME_BYTES)
    stream.seek(index_offset)
    header = stream.read(8)
    if len(header) != 8:
        raise ArchiveError(f"archive truncated at offset {index_offset}: skippable frame header needs 8 bytes")
    magic, size = struct.unpack("<II", header)
    if not zstdframes.SKIPPABLE_FIRST <= magic <= zstdframes.SKIPPABLE_LAST:
        raise ArchiveError(f"offset {index_offset}: expected a skippable frame")
    limit = min(caps.max_metadata, max(KitIndex.max_bytes(bound), KitIndex.max_bytes(member_bound, frame_bound)))
    if size > limit:
        raise ArchiveError(
            f"offset {index_offset}: skippable frame of {size} bytes exceeds the cap of {limit} "
            f"(an index of at most {max(bound, member_bound)} members and {frame_bound} frames)"
        )
    data = stream.read(size)
    if len(data) != size:
        raise ArchiveError(f"archive truncated at offset {index_offset + 8}: skippable frame needs {size} bytes")
    if magic != zstdframes.INDEX_MAGIC:
        raise ArchiveError(f"kit index: frame at offset {index_offset} is not an index frame")
    end = index_offset + 8 + size
    if end != file_size - zstdframes.FOOTER_SIZE:
        raise ArchiveError(
            f"kit index: {file_size - zstdframes.FOOTER_SIZE - end} unexpected bytes between index and footer"
        )
    # The parse cost is bounded by the form the bytes start with (sorted keys: "end" comes first, a number in
    # format 2, an object in format 1); either way it is bounded before parsing.
    if re.match(rb'\{"end":[0-9]', data):
        index = KitIndex.from_bytes(data, max_members=member_bound, max_frames=frame_bound)
    else:
        index = KitIndex.from_bytes(data, max_members=bound)
    if len(index.members) > caps.max_members:
        raise ArchiveError(f"kit index lists {len(index.members)} members, more than the cap of {caps.max_members}")
    if index.format_version == 2:
        if len(index.frames) > caps.max_frames:
            raise ArchiveError(f"kit index lists {len(index.frames)} frames, more than the cap of {caps.max_frames}")
        last = index.frames[-1]
        if last.offset + last.length != index_offset:
            raise ArchiveError(
                f"kit index: its frames end at offset {last.offset + last.length}, but the index frame is at "
                f"{index_offset}"
            )
    return IndexLocation(index=index, index_offset=index_offset, file_size=file_size)


class MemberRef(Protocol):
    """What a member is expected to be: an ``IndexEntry`` (index), an ``Expected`` (signed manifest)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def frame_sha256(self) -> str: ...


# Where the expectation comes from: the signed manifest, or only the unsigned index. It changes the
# wording of errors, and one exit code: a member at the offset of another is an index fault [5] when the
# index placed it, and an altered kit [4] when the signed manifest did (docs/format.md §8.2, §8.9).
Against = Literal["signed", "index"]


@dataclass(frozen=True)
class _Words:
    placer: str  # who put the member at its offset
    size: str  # who gave its size
    content: str  # whose content digest it must have
    frame: str  # whose frame digest


_WORDS: dict[Against, _Words] = {
    "signed": _Words("the signed index", "signed size is", "the signed one", "their signed digest"),
    "index": _Words("the index", "index says", "the index", "the index's frame digest"),
}


@dataclass
class MemberDigests:
    """The two digests a member read feeds: its content (without padding) and its data frame's compressed bytes.

    Any objects with ``update``/``hexdigest`` (hashlib objects, or ``QueuedDigest`` for a hash thread).
    """

    content: Any
    frame: Any

    @classmethod
    def new(cls) -> MemberDigests:
        return cls(hashlib.sha256(), hashlib.sha256())

    def check(self, entry: MemberRef, *, against: Against = "index", label: str | None = None) -> None:
        """IntegrityError unless both digests are the expected ones (call once the member was read through)."""
        label = label or f"member {entry.path}"
        observed = self.content.hexdigest()
        if observed != entry.sha256:
            raise IntegrityError(
                f"{label}: sha256 differs from {_WORDS[against].content}: "
                f"expected sha256 {entry.sha256}, got {observed}"
            )
        if self.frame.hexdigest() != entry.frame_sha256:
            raise IntegrityError(f"{label}: compressed frames differ from {_WORDS[against].frame}")


def member_header(
    frames: zstdframes.FrameReader,
    entry: MemberRef,
    *,
    against: Against = "index",
    label: str | None = None,
    stream_offset: int | None = None,
    seen: dict[str, str] | None = None,
    mtime: int | None = None,
) -> tarfmt.MemberHeader:
    """Read and check the header frame of the member expected at ``frames``' position (§8.9 steps 2 to 6).

    The first half of ``member_content``; ``member_data`` must follow at once. With ``mtime`` (the signed
    ``build.mtime``) the header's mtime must be it: the header frame is not signed, and `tar -x` applies it.
    """
    label = label or f"member {entry.path}"
    frame_offset = frames.offset
    if frame_offset != entry.offset:
        raise ArchiveError(f"{label}: reading at offset {frame_offset}, but the member starts at {entry.offset}")
    frames.tap = None
    block = b"".join(frames.iter_zstd_frame(max_output=tarfmt.BLOCK, what=f"{label} header"))
    if len(block) != tarfmt.BLOCK:
        raise ArchiveError(f"{label}: offset {frame_offset}: header frame holds {len(block)} bytes, not 512")
    where = None if stream_offset is not None else f"{label}: tar header in the frame at offset {frame_offset}"
    header = tarfmt.parse_header(block, offset=stream_offset or 0, where=where)
    if seen is not None:
        clash = paths.claim(header.path, seen)
        if clash is not None:
            raise ArchiveError(f"member {header.path}: {clash}")
    if header.path != entry.path:
        error = IntegrityError if against == "signed" else ArchiveError
        raise error(
            f"{header.path}: found at offset {frame_offset}, expected {entry.path} "
            f"({_WORDS[against].placer} says {entry.path} at offset {entry.offset})"
        )
    if header.size != entry.size:
        raise IntegrityError(f"{label}: tar header says {header.size} bytes, {_WORDS[against].size} {entry.size}")
    if mtime is not None and header.mtime != mtime:
        raise ArchiveError(f"{label}: tar header mtime {header.mtime}, the signed build.mtime is {mtime}")
    return header


def member_data(
    frames: zstdframes.FrameReader,
    entry: MemberRef,
    *,
    against: Against = "index",
    label: str | None = None,
    digests: MemberDigests | None = None,
    defer_digests: bool = False,
) -> Iterator[bytes]:
    """Yield the content of the data frame at ``frames``' position, checking it (§8.9 steps 7 to 10).

    Pieces may be empty (one per decoded batch). The last non-empty piece is yielded only after every
    check has passed, the digests included, so a consumer never completes with unchecked bytes. With
    ``defer_digests`` the digests are fed but not compared: the caller calls ``digests.check`` later.
    """
    label = label or f"member {entry.path}"
    digests = digests or MemberDigests.new()
    padded = tarfmt.padded_size(entry.size)
    received = 0
    produced = 0
    held = b""  # the piece that completes the content, handed out once everything is checked
    data_start = frames.offset
    frames.tap = digests.frame  # the frame digest covers exactly the data frame's compressed bytes
    try:
        for chunk in frames.iter_zstd_frame(max_output=padded, what=label):
            produced += len(chunk)
            take = min(len(chunk), entry.size - received)
            if take:
                data = chunk if take == len(chunk) else chunk[:take]
                digests.content.update(data)
                received += take
                if received == entry.size:
                    held = data
                    data = b""
            else:
                data = b""
            if take < len(chunk) and any(chunk[take:]):
                raise ArchiveError(f"{label}: non-zero bytes in tar padding")
            yield data
    except ArchiveError as exc:
        # A frame that is not the one whose digest was given is reported as that (an altered kit [4]),
        # not as whatever its altered bytes broke first. Not when digests are deferred: the scan
        # compares them in batches and reports the first fault it meets (docs/format.md §8.9).
        if not defer_digests and frames.raw_sha256(data_start, entry.offset + entry.length) != entry.frame_sha256:
            raise IntegrityError(f"{label}: compressed frames differ from {_WORDS[against].frame}") from exc
        raise
    finally:
        frames.tap = None
    if received != entry.size:
        raise IntegrityError(f"{label}: stream holds {received} bytes, {_WORDS[against].size} {entry.size}")
    if produced != padded:
        raise ArchiveError(f"{label}: tar padding is {produced - received} bytes, expected {padded - entry.size}")
    span = frames.offset - entry.offset
    if span != entry.length:
        raise ArchiveError(f"{label}: frames span {span} bytes, {_WORDS[against].placer} says {entry.length}")
    if not defer_digests:
        digests.check(entry, against=against, label=label)
    if held:
        yield held


def member_content(
    frames: zstdframes.FrameReader,
    entry: MemberRef,
    *,
    against: Against = "index",
    label: str | None = None,
    stream_offset: int | None = None,
    seen: dict[str, str] | None = None,
    digests: MemberDigests | None = None,
    defer_digests: bool = False,
    mtime: int | None = None,
) -> Iterator[bytes]:
    """The one member reader: header frame then data frame at ``frames``' position, every rule checked.

    Header frame: exactly 512 bytes under the zstd frame rules; the header under the tar rules; its
    path (not colliding with ``seen``, when given) and size are the expected ones. Data frame: straight
    after, decoded whole by libzstd and bounded by the padded size; padding all zero; exactly ``size``
    data bytes and the padded size in all; both frames span the expected ``length``; content and frame
    digests equal the expected ones (deferred to the caller with ``defer_digests``). Yields the content
    in pieces (some possibly empty), the last one only after every check. ArchiveError for malformed
    frames or headers [5], IntegrityError for content that is not what was expected [4].
    """
    member_header(frames, entry, against=against, label=label, stream_offset=stream_offset, seen=seen, mtime=mtime)
    yield from member_data(frames, entry, against=against, label=label, digests=digests, defer_digests=defer_digests)


def _open_member(stream: BinaryIO, entry: MemberRef, caps: Caps) -> zstdframes.FrameReader:
    stream.seek(entry.offset)
    # Read about the member's span at a time: a seeking read wants one member, not the megabyte after it.
    read_chunk = max(4096, min(entry.length, 1 << 20))
    return zstdframes.FrameReader(stream, max_window=caps.max_window, start=entry.offset, read_chunk=read_chunk)


def member_chunks(
    stream: BinaryIO,
    entry: MemberRef | MemberSpan,
    caps: Caps,
    *,
    against: Against = "index",
    label: str | None = None,
) -> Iterator[bytes]:
    """The content of one member found through the index (format 1: by seeking to ``entry.offset``; format 2:
    by decoding the frames that hold it), in non-empty pieces, fully checked.

    The last piece comes only after every check (digests included), so a consumer that completes
    something on the last piece (an upload, a rename) never completes it with bytes that were not verified.
    """
    if isinstance(entry, MemberSpan):
        yield from reader2.span_chunks(stream, entry, max_window=caps.max_window, against=against)
        return
    for piece in member_content(_open_member(stream, entry, caps), entry, against=against, label=label):
        if piece:
            yield piece


def read_member(stream: BinaryIO, entry: MemberRef | MemberSpan, caps: Caps) -> bytes:
    """The content of one member, found through the index; bounded by ``caps.max_metadata``."""
    if entry.size > caps.max_metadata:
        raise ArchiveError(f"{entry.path}: {entry.size} bytes exceeds the metadata cap of {caps.max_metadata}")
    return b"".join(member_chunks(stream, entry, caps))


def read_member_to(stream: BinaryIO, entry: MemberRef | MemberSpan, caps: Caps, destination: Path) -> str:
    """Stream one member's content into ``destination`` (created new, never through a symlink); its SHA-256.

    Checked like every member read: the returned digest is the expected one, or an error was raised
    (and ``destination`` holds partial content the caller must discard).
    """
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink:
        for piece in member_chunks(stream, entry, caps):
            sink.write(piece)
    return entry.sha256


class _Tee:
    """A frame digest that also keeps the bytes it is fed, for a verbatim copy."""

    def __init__(self, buffer: bytearray) -> None:
        self._digest = hashlib.sha256()
        self._buffer = buffer

    def update(self, data: bytes) -> None:
        self._digest.update(data)
        self._buffer += data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _VerbatimDataFrame:
    """Reads a member's compressed data frame for a byte-for-byte copy, decoding and checking it on the way.

    Bytes are handed out only once the batch they belong to has been decoded, and the last byte only once
    the whole member passed every check of ``member_data`` (digests included): a copy that completes is a
    copy of a frame that decodes, exactly as ``zstd -d`` decodes it, to the expected content.
    """

    def __init__(self, frames: zstdframes.FrameReader, entry: MemberRef) -> None:
        self._buffer = bytearray()
        self.digest = _Tee(self._buffer)
        digests = MemberDigests(hashlib.sha256(), self.digest)
        self._pieces = member_data(frames, entry, against="signed", digests=digests)
        self._done = False

    def read(self, size: int = -1) -> bytes:
        # Keep at least one byte back until the member is done, so the final byte waits for the checks.
        while not self._done and (size < 0 or len(self._buffer) <= size):
            try:
                next(self._pieces)
            except StopIteration:
                self._done = True
        take = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:take])
        del self._buffer[:take]
        return data


def data_frame_source(stream: BinaryIO, entry: MemberRef, caps: Caps) -> tuple[BinaryIO, int, Any]:
    """Position at ``entry``'s data frame for a verbatim copy: (reader, frame length, frame digest).

    The header frame is checked as every member read checks it; the reader then hands out the data
    frame's compressed bytes while decoding them, and raises before the last byte unless the frame
    decodes to the expected content with the expected frame digest and span. Once the reader has been
    read through, the digest covers exactly the bytes handed out.
    """
    frames = _open_member(stream, entry, caps)
    member_header(frames, entry, against="signed")
    length = entry.offset + entry.length - frames.offset
    if length <= 0:
        raise ArchiveError(f"member {entry.path}: index length leaves no room for a data frame")
    source = _VerbatimDataFrame(frames, entry)
    return source, length, source.digest  # type: ignore[return-value]


@dataclass(frozen=True)
class Expected:
    """What the signed metadata says a member is."""

    path: str
    size: int
    sha256: str
    offset: int
    length: int
    frame_sha256: str


@dataclass(frozen=True)
class ScanResult:
    members: int
    payload_bytes: int
    compressed_bytes: int


def scan(
    stream: BinaryIO,
    *,
    expected: Mapping[str, Expected],
    location: IndexLocation,
    caps: Caps,
    on_bytes: Callable[[int], None] | None = None,
    extract_to: Path | None = None,
    hasher: HashWorker | None = None,
    extract_only: Callable[[str], bool] | None = None,
    mtime: int | None = None,
) -> ScanResult:
    """Decompress the whole kit once and check every member against ``expected``.

    With ``mtime`` (the signed ``build.mtime``) every header must carry it.

    Raises ArchiveError for unsafe or malformed members and index
    inconsistencies, IntegrityError for unlisted, missing or altered files.
    With ``extract_to`` (a fresh, empty directory) each member is also written
    there as it streams (only the paths ``extract_only`` accepts, when given; every
    member is checked either way); the caller must discard that directory on any error.
    Digests are computed on ``hasher``'s thread (one is made when not given)
    and compared in batches; every comparison happens before this returns.
    """
    own_worker = hasher is None
    worker = hasher or HashWorker()
    try:
        return _scan(stream, expected, location, caps, on_bytes, extract_to, worker, extract_only, mtime)
    finally:
        if own_worker:
            worker.close()


_CHECK_EVERY = 64


def _scan(
    stream: BinaryIO,
    expected: Mapping[str, Expected],
    location: IndexLocation,
    caps: Caps,
    on_bytes: Callable[[int], None] | None,
    extract_to: Path | None,
    worker: HashWorker,
    extract_only: Callable[[str], bool] | None,
    mtime: int | None,
) -> ScanResult:
    pending: list[_PendingCheck] = []
    by_offset = {e.offset: e for e in expected.values()}
    index = location.index
    stream.seek(0)
    reader = zstdframes.FrameReader(stream, max_window=caps.max_window)
    seen_keys: dict[str, str] = {}
    stream_offset = 0  # position in the decompressed tar stream
    members = 0
    payload = 0
    while True:
        frame_offset = reader.offset
        if frame_offset >= location.index_offset:
            raise ArchiveError("archive has no end-of-archive frame where the index says it is")
        if reader.peek_magic() != zstdframes.ZSTD_MAGIC:
            raise ArchiveError(f"offset {frame_offset}: unexpected non-zstd frame inside the tar stream")
        entry = by_offset.get(frame_offset)
        if entry is None:
            _reject_unexpected_frame(
                reader, frame_offset, expected, stream_offset, seen_keys, is_end=frame_offset == index.end_offset
            )
            break  # the end-of-archive frame was where and what it should be
        members += 1
        if members > caps.max_members:
            raise ArchiveError(f"archive has more than {caps.max_members} members")
        target = extract_to if extract_only is None or extract_only(entry.path) else None
        pending.append(_scan_member(reader, entry, stream_offset, seen_keys, on_bytes, target, worker, mtime))
        if len(pending) >= _CHECK_EVERY:
            _settle(pending, worker)
        stream_offset += tarfmt.member_size(entry.size)
        payload += entry.size
    _settle(pending, worker)
    if reader.offset - index.end_offset != index.end_length:
        raise ArchiveError("end-of-archive frame length differs from the index")
    if reader.offset != location.index_offset:
        raise ArchiveError(f"{location.index_offset - reader.offset} bytes of data after the end of the tar archive")
    seen_paths = {path for key, path in seen_keys.items() if not key.startswith("/")}
    missing = sorted(set(expected) - seen_paths)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise IntegrityError(f"{missing[0]}: listed in the signed manifest but missing from the archive{more}")
    return ScanResult(members=members, payload_bytes=payload, compressed_bytes=location.file_size)


def _reject_unexpected_frame(
    reader: zstdframes.FrameReader,
    frame_offset: int,
    expected: Mapping[str, Expected],
    stream_offset: int,
    seen_keys: dict[str, str],
    *,
    is_end: bool,
) -> None:
    """Accept the end-of-archive frame, or explain what the unexpected frame holds."""
    what = f"frame at offset {frame_offset}"
    chunks = reader.iter_zstd_frame(max_output=1 << 30, what=what)
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) > len(tarfmt.END_OF_ARCHIVE):
            break
    if is_end and first == tarfmt.END_OF_ARCHIVE:
        return
    if len(first) >= tarfmt.BLOCK and any(first[: tarfmt.BLOCK]):
        header = tarfmt.parse_header(first[: tarfmt.BLOCK], offset=stream_offset)
        key = paths.collision_key(header.path)
        if key in seen_keys:
            raise ArchiveError(
                f"member {header.path}: duplicate of {seen_keys[key]} (same name up to case, Unicode form or ./)"
            )
        if header.path not in expected:
            raise IntegrityError(f"{header.path}: member not listed in the signed manifest")
        raise ArchiveError(
            f"{header.path}: member at offset {frame_offset}, "
            f"but the signed index puts it at {expected[header.path].offset}"
        )
    raise ArchiveError(f"{what}: not a member and not the end of the archive the index names")


@dataclass
class _PendingCheck:
    entry: Expected
    digests: MemberDigests


def _settle(pending: list[_PendingCheck], worker: HashWorker) -> None:
    """Wait for queued digests and compare them, in member order."""
    worker.sync()
    for check in pending:
        check.digests.check(check.entry, against="signed")
    pending.clear()


def _scan_member(
    reader: zstdframes.FrameReader,
    entry: Expected,
    stream_offset: int,
    seen_keys: dict[str, str],
    on_bytes: Callable[[int], None] | None,
    extract_to: Path | None,
    worker: HashWorker,
    mtime: int | None,
) -> _PendingCheck:
    """One member through ``member_content``, its digests computed on the hash thread and compared later."""
    digests = MemberDigests(QueuedDigest(worker, hashlib.sha256()), QueuedDigest(worker, hashlib.sha256()))
    pieces = member_content(
        reader,
        entry,
        against="signed",
        stream_offset=stream_offset,
        seen=seen_keys,
        digests=digests,
        defer_digests=True,
        mtime=mtime,
    )
    sink = _create_member_file(extract_to, entry.path) if extract_to is not None else None
    try:
        for piece in pieces:
            if piece:
                if sink is not None:
                    sink.write(piece)
                if on_bytes is not None:
                    on_bytes(len(piece))
    finally:
        if sink is not None:
            sink.close()
    digests.content.flush()
    digests.frame.flush()
    return _PendingCheck(entry, digests)


def _create_member_file(root: Path, member: str) -> BinaryIO:
    # The path already passed the member rules (relative, no '..', portable); the
    # root is a directory we created, so O_EXCL|O_NOFOLLOW only guards against races.
    target = root.joinpath(*member.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")
