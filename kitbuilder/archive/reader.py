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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.hashing import HashWorker, QueuedDigest

# The index locator and the member reader live in their own modules; re-exported here, where callers have
# always found them.
from kitbuilder.archive.locate import Caps as Caps
from kitbuilder.archive.locate import IndexLocation as IndexLocation
from kitbuilder.archive.locate import read_index as read_index
from kitbuilder.archive.members import Against as Against
from kitbuilder.archive.members import MemberDigests as MemberDigests
from kitbuilder.archive.members import MemberRef as MemberRef
from kitbuilder.archive.members import data_frame_source as data_frame_source
from kitbuilder.archive.members import member_chunks as member_chunks
from kitbuilder.archive.members import member_content as member_content
from kitbuilder.archive.members import member_data as member_data
from kitbuilder.archive.members import member_header as member_header
from kitbuilder.archive.members import read_member as read_member
from kitbuilder.archive.members import read_member_to as read_member_to
from kitbuilder.core import paths
from kitbuilder.errors import ArchiveError, IntegrityError


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
