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

    @classmethod
    def from_bytes(cls, data: bytes) -> KitIndex:
        document = jsonio.load_object(data, what="archive index")
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
