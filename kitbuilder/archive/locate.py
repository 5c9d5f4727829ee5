"""Finding a kit's index: the footer, the index frame it points at, and the caps that bound what is read."""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

from kitbuilder.archive import zstdframes
from kitbuilder.archive.index import MAX_METADATA_MEMBERS, MIN_FRAME_BYTES, MIN_MEMBER_BYTES, KitIndex
from kitbuilder.errors import ArchiveError


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
    # SHA-256 of the bytes from ``index_offset`` to the end (index frame, footer) as they were read and parsed: a
    # reader that hashes the file reads them again, and must get these bytes or refuse the file (it changed).
    tail_sha256: str

    def check_unchanged(self, shown: object, hashed_to: int, tail_sha256: str, beyond: bytes) -> None:
        """ArchiveError unless a reader that hashed the file to ``hashed_to`` (the tail from ``index_offset`` on
        hashing to ``tail_sha256``, ``beyond`` read past the end) saw the file these were read from: the same
        ``file_size`` bytes, ending there, with the index and footer that were parsed. A kit that shrank, grew or
        was rewritten after its footer was read is not the one checked, whatever its digest."""
        if hashed_to != self.file_size or beyond:
            now = "shorter" if hashed_to < self.file_size else "longer"
            raise ArchiveError(
                f"{shown}: the kit changed while it was being verified (now {now} than the {self.file_size} bytes "
                "its footer was read at); verify it again once nothing is writing to it"
            )
        if tail_sha256 != self.tail_sha256:
            raise ArchiveError(
                f"{shown}: the kit changed while it was being verified (its index or footer, from offset "
                f"{self.index_offset}, was rewritten after it was read); verify it again once nothing is writing to it"
            )


def read_index(stream: BinaryIO, caps: Caps) -> IndexLocation:
    """Locate and parse the index through the footer; ArchiveError if the file is not a sealed kit."""
    file_size = stream.seek(0, os.SEEK_END)
    if file_size < zstdframes.FOOTER_SIZE:
        raise ArchiveError(f"kit is only {file_size} bytes: not a kit, or truncated")
    stream.seek(file_size - zstdframes.FOOTER_SIZE)
    footer = stream.read(zstdframes.FOOTER_SIZE)
    index_offset = zstdframes.parse_footer(footer)
    if index_offset >= file_size - zstdframes.FOOTER_SIZE:
        raise ArchiveError("kit footer: index offset points past the end of the file")
    # The index is one skippable frame of raw bytes, read with one read of its declared size: its cost is
    # bounded before reading (by the members the bytes before it could hold, and by twice the cap, so an
    # index a little over the cap is still parsed and the refusal below can say by how much) and before parsing.
    # Format 1: every member takes two frames of at least 9 bytes before the index. Format 2: the index lists the
    # metadata members only (at most MAX_METADATA_MEMBERS), frames are bounded by the bytes before the index (9 at
    # least each) and by the cap.
    bound = min(2 * caps.max_members + 16, index_offset // MIN_MEMBER_BYTES)
    member_bound = MAX_METADATA_MEMBERS
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
            f"(an index of at most {bound} members, or of {frame_bound} frames and {member_bound} metadata members)"
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
    if index.format_version == 1 and len(index.members) > caps.max_members:
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
    tail = hashlib.sha256(header)
    tail.update(data)
    tail.update(footer)
    return IndexLocation(index=index, index_offset=index_offset, file_size=file_size, tail_sha256=tail.hexdigest())
