"""The archive index: where each member's zstd frame lies, kept in a skippable frame at the end.

The index lets ``inspect`` and ``patch`` seek to a member's frame without
decompressing anything else. It is only a map: the payload part of it is
repeated in the signed manifest, and the verifier checks both against the
stream it actually decompresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kitbuilder.core import jsonio, schemas

INDEX_FORMAT = "kitbuilder-index/v1"
# The smallest a member can be in the archive: two zstd frames (header and data) of at least 9 bytes each
# (magic, frame header, one block header). An index cannot list more members than the bytes before it hold.
MIN_MEMBER_BYTES = 18
# Per member the index holds one object with six fields (13 values and keys); the rest is a fixed envelope.
_VALUES_PER_ENTRY = 13
# The longest compact entry: fixed keys and punctuation, two hex digests, three 20-digit integers and a
# 255-byte portable (ASCII, never escaped) path come to 512 bytes.
_BYTES_PER_ENTRY = 640


@dataclass(frozen=True)
class IndexEntry:
    path: str
    offset: int
    length: int
    size: int
    sha256: str
    frame_sha256: (
        str  # SHA-256 of the member's compressed data frame (the header frame is rebuilt from path, size and mtime)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "offset": self.offset,
            "length": self.length,
            "size": self.size,
            "sha256": self.sha256,
            "frameSha256": self.frame_sha256,
        }


@dataclass(frozen=True)
class KitIndex:
    members: tuple[IndexEntry, ...]
    end_offset: int
    end_length: int

    def to_bytes(self) -> bytes:
        return jsonio.dump_compact(
            {
                "format": INDEX_FORMAT,
                "members": [m.to_json() for m in self.members],
                "end": {"offset": self.end_offset, "length": self.end_length},
            }
        )

    @staticmethod
    def max_bytes(members: int) -> int:
        """The most bytes an index of ``members`` entries can take."""
        return _BYTES_PER_ENTRY * members + 256

    @classmethod
    def from_bytes(cls, data: bytes, *, max_members: int | None = None) -> KitIndex:
        """Parse and check an index; with ``max_members`` the parse cost is bounded before it starts."""
        limits = None
        if max_members is not None:
            limits = jsonio.ParseLimits(
                max_values=_VALUES_PER_ENTRY * max_members + 32,
                max_containers=max_members + 4,
                why=f"an index of at most {max_members} members",
            )
        document = jsonio.load_object(data, what="archive index", limits=limits)
        schemas.validate("index", document, what="archive index")
        return cls(
            members=tuple(
                IndexEntry(m["path"], m["offset"], m["length"], m["size"], m["sha256"], m["frameSha256"])
                for m in document["members"]
            ),
            end_offset=document["end"]["offset"],
            end_length=document["end"]["length"],
        )

    def by_path(self) -> dict[str, IndexEntry]:
        return {m.path: m for m in self.members}
