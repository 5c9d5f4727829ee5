"""Reading kits: the index and single members by seeking, or the whole stream in one pass.

``read_index`` and ``read_member`` serve ``inspect`` and the first verify step
(small metadata members, bounded). ``scan`` decompresses every frame from byte
0 to the index, parses the tar stream it yields and checks it against what the
caller expects, so what ``zstd -dc | tar -x`` would produce is what is checked.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.archive.index import MIN_MEMBER_BYTES, IndexEntry, KitIndex
from kitbuilder.core import paths
from kitbuilder.errors import ArchiveError, IntegrityError


@dataclass(frozen=True)
class Caps:
    """Hard limits that keep a hostile kit from costing memory, disk or time."""

    max_window: int = 1 << 24
    max_members: int = 200_000
    max_metadata: int = 64 << 20


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
    bound = min(2 * caps.max_members + 16, index_offset // MIN_MEMBER_BYTES)
    stream.seek(index_offset)
    header = stream.read(8)
    if len(header) != 8:
        raise ArchiveError(f"archive truncated at offset {index_offset}: skippable frame header needs 8 bytes")
    magic, size = struct.unpack("<II", header)
    if not zstdframes.SKIPPABLE_FIRST <= magic <= zstdframes.SKIPPABLE_LAST:
        raise ArchiveError(f"offset {index_offset}: expected a skippable frame")
    limit = min(caps.max_metadata, KitIndex.max_bytes(bound))
    if size > limit:
        raise ArchiveError(
            f"offset {index_offset}: skippable frame of {size} bytes exceeds the cap of {limit} "
            f"(an index of at most {bound} members)"
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
    index = KitIndex.from_bytes(data, max_members=bound)
    if len(index.members) > caps.max_members:
        raise ArchiveError(f"kit index lists {len(index.members)} members, more than the cap of {caps.max_members}")
    return IndexLocation(index=index, index_offset=index_offset, file_size=file_size)


def read_member(stream: BinaryIO, entry: IndexEntry, caps: Caps) -> bytes:
    """The content of one member, found through the index; bounded by ``caps.max_metadata``."""
    if entry.size > caps.max_metadata:
        raise ArchiveError(f"{entry.path}: {entry.size} bytes exceeds the metadata cap of {caps.max_metadata}")
    stream.seek(entry.offset)
    reader = zstdframes.FrameReader(stream, max_window=caps.max_window, start=entry.offset)
    header_block = b"".join(reader.iter_zstd_frame(max_output=tarfmt.BLOCK, what=f"{entry.path} header"))
    reader.tap = hashlib.sha256()
    if len(header_block) != tarfmt.BLOCK:
        raise ArchiveError(f"{entry.path}: header frame holds {len(header_block)} bytes, not one 512-byte header")
    header = tarfmt.parse_header(header_block, offset=-1)
    if header.path != entry.path:
        raise ArchiveError(f"index says {entry.path} at offset {entry.offset}, but the member there is {header.path}")
    if header.size != entry.size:
        raise IntegrityError(f"{entry.path}: tar header says {header.size} bytes, index says {entry.size}")
    data = b"".join(reader.iter_zstd_frame(max_output=tarfmt.padded_size(entry.size), what=entry.path))
    if reader.offset - entry.offset != entry.length:
        raise ArchiveError(f"{entry.path}: frames span {reader.offset - entry.offset} bytes, index says {entry.length}")
    if len(data) != tarfmt.padded_size(entry.size):
        raise ArchiveError(
            f"{entry.path}: data frame holds {len(data)} bytes, expected {tarfmt.padded_size(entry.size)}"
        )
    content = data[: entry.size]
    if hashlib.sha256(content).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.path}: sha256 differs from the index")
    if reader.tap.hexdigest() != entry.frame_sha256:
        raise IntegrityError(f"{entry.path}: compressed frames differ from the index's frame digest")
    return content


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
) -> ScanResult:
    """Decompress the whole kit once and check every member against ``expected``.

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
        return _scan(stream, expected, location, caps, on_bytes, extract_to, worker, extract_only)
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
        pending.append(_scan_member(reader, entry, stream_offset, seen_keys, on_bytes, target, worker))
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
    content: QueuedDigest
    frames: QueuedDigest


def _settle(pending: list[_PendingCheck], worker: HashWorker) -> None:
    """Wait for queued digests and compare them, in member order."""
    worker.sync()
    for check in pending:
        observed = check.content.hexdigest()
        if observed != check.entry.sha256:
            raise IntegrityError(f"{check.entry.path}: expected sha256 {check.entry.sha256}, got {observed}")
        if check.frames.hexdigest() != check.entry.frame_sha256:
            raise IntegrityError(f"{check.entry.path}: compressed frames differ from the signed frame digest")
    pending.clear()


def _scan_member(
    reader: zstdframes.FrameReader,
    entry: Expected,
    stream_offset: int,
    seen_keys: dict[str, str],
    on_bytes: Callable[[int], None] | None,
    extract_to: Path | None,
    worker: HashWorker,
) -> _PendingCheck:
    """One member: its header frame (exactly 512 bytes), then its data frame (data plus zero padding)."""
    frame_offset = reader.offset
    frames = QueuedDigest(worker, hashlib.sha256())
    header_block = b"".join(reader.iter_zstd_frame(max_output=tarfmt.BLOCK, what=f"member {entry.path} header"))
    reader.tap = frames  # the frame digest covers the data frame
    if len(header_block) != tarfmt.BLOCK:
        raise ArchiveError(f"offset {frame_offset}: header frame holds {len(header_block)} bytes, not 512")
    header = tarfmt.parse_header(header_block, offset=stream_offset)
    _check_header(header.path, header.size, entry, seen_keys)
    sink = _create_member_file(extract_to, entry.path) if extract_to is not None else None
    content = QueuedDigest(worker, hashlib.sha256())
    received = 0
    produced = 0
    padded = tarfmt.padded_size(entry.size)
    try:
        for chunk in reader.iter_zstd_frame(max_output=padded, what=f"member {entry.path}"):
            produced += len(chunk)
            take = min(len(chunk), entry.size - received)
            if take:
                data = chunk if take == len(chunk) else chunk[:take]
                content.update(data)
                if sink is not None:
                    sink.write(data)
                received += take
            if take < len(chunk) and any(chunk[take:]):
                raise ArchiveError(f"member {entry.path}: non-zero bytes in tar padding")
            if on_bytes is not None:
                on_bytes(len(chunk))
    finally:
        if sink is not None:
            sink.close()
    reader.tap = None
    if received != entry.size:
        raise IntegrityError(f"{entry.path}: stream holds {received} bytes, signed size is {entry.size}")
    if produced != padded:
        raise ArchiveError(
            f"member {entry.path}: tar padding is {produced - received} bytes, expected {padded - entry.size}"
        )
    if reader.offset - frame_offset != entry.length:
        raise ArchiveError(
            f"{entry.path}: frames span {reader.offset - frame_offset} bytes, signed index says {entry.length}"
        )
    content.flush()
    frames.flush()
    return _PendingCheck(entry, content, frames)


def _create_member_file(root: Path, member: str) -> BinaryIO:
    # The path already passed the member rules (relative, no '..', portable); the
    # root is a directory we created, so O_EXCL|O_NOFOLLOW only guards against races.
    target = root.joinpath(*member.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def _check_header(path: str, size: int, entry: Expected, seen: dict[str, str]) -> None:
    clash = paths.claim(path, seen)
    if clash is not None:
        raise ArchiveError(f"member {path}: {clash}")
    if path != entry.path:
        raise IntegrityError(f"{path}: not where the signed index expects it (expected {entry.path} at that offset)")
    if size != entry.size:
        raise IntegrityError(f"{path}: tar header says {size} bytes, signed size is {entry.size}")


class _TappedReader:
    def __init__(self, stream: BinaryIO, digest: Any) -> None:
        self._stream = stream
        self._digest = digest

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        return data


def data_frame_source(stream: BinaryIO, entry: IndexEntry, caps: Caps) -> tuple[BinaryIO, int, Any]:
    """Position ``stream`` at ``entry``'s data frame for a verbatim copy.

    Returns a reader over the data frame, its length, and a digest that, once the
    frame has been read through, covers exactly the data frame's bytes: the
    caller compares it with the signed ``frame_sha256`` before trusting the copy.
    """
    stream.seek(entry.offset)
    reader = zstdframes.FrameReader(stream, max_window=caps.max_window, start=entry.offset, read_chunk=4096)
    header_block = b"".join(reader.iter_zstd_frame(max_output=tarfmt.BLOCK, what=f"{entry.path} header"))
    header = tarfmt.parse_header(header_block, offset=-1)
    if header.path != entry.path or header.size != entry.size:
        raise ArchiveError(f"{entry.path}: the member at offset {entry.offset} is not what the index says")
    data_offset = reader.offset
    length = entry.offset + entry.length - data_offset
    if length <= 0:
        raise ArchiveError(f"{entry.path}: index length leaves no room for a data frame")
    stream.seek(data_offset)
    digest = hashlib.sha256()
    return _TappedReader(stream, digest), length, digest  # type: ignore[return-value]


def read_member_to(stream: BinaryIO, entry: IndexEntry, caps: Caps, destination: Path) -> str:
    """Stream one member's content into ``destination`` (created new); returns its SHA-256.

    Bounded like ``scan``: the data frame may not decompress to more than the
    entry's padded size, and the compressed bytes must match the frame digest.
    """
    stream.seek(entry.offset)
    reader = zstdframes.FrameReader(stream, max_window=caps.max_window, start=entry.offset)
    header_block = b"".join(reader.iter_zstd_frame(max_output=tarfmt.BLOCK, what=f"{entry.path} header"))
    reader.tap = hashlib.sha256()
    header = tarfmt.parse_header(header_block, offset=-1)
    if header.path != entry.path or header.size != entry.size:
        raise ArchiveError(f"{entry.path}: the member at offset {entry.offset} is not what the index says")
    digest = hashlib.sha256()
    received = 0
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink:
        for chunk in reader.iter_zstd_frame(max_output=tarfmt.padded_size(entry.size), what=entry.path):
            take = min(len(chunk), entry.size - received)
            data = chunk[:take]
            digest.update(data)
            sink.write(data)
            received += take
    if received != entry.size or reader.offset - entry.offset != entry.length:
        raise IntegrityError(f"{entry.path}: member does not have the size and span the index gives")
    if reader.tap.hexdigest() != entry.frame_sha256:
        raise IntegrityError(f"{entry.path}: compressed frames differ from the index's frame digest")
    return digest.hexdigest()
