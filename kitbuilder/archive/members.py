"""The one member reader: a member's header frame and data frame, every member rule (docs/format.md §8.2, §8.9).

Each way of reading a member is a thin use of ``member_content`` that differs only in what it does with the
bytes: ``read_member`` joins them, ``read_member_to`` writes them to a new file, ``member_chunks`` hands them
out, ``data_frame_source`` copies the compressed data frame verbatim.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from kitbuilder.archive import reader2, tarfmt, zstdframes
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.locate import Caps
from kitbuilder.errors import ArchiveError, IntegrityError


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
    reader2.check_parsed_header(
        header,
        path=entry.path,
        size=entry.size,
        against=against,
        found=f"at offset {frame_offset}",
        placed=f"at offset {entry.offset}",
        label=label,
        seen=seen,
    )
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
            if take < len(chunk):
                reader2.check_padding(chunk[take:], label)
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
