"""The rules a format-2 index's own entries, the metadata members, keep (docs/format.md §0.2, §0.4).

Checked where the index is read (``KitIndex.from_bytes``), so every reader of a kit (inspect, patch, build
--delta-from, verify) refuses the same bytes, not only the readers that later compare the index with the signed
manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from kitbuilder.archive import layout
from kitbuilder.core.metanames import is_metadata
from kitbuilder.errors import ArchiveError


class _Member(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def frame(self) -> int: ...
    @property
    def at(self) -> int: ...
    @property
    def size(self) -> int: ...


def check_names(members: Iterable[_Member]) -> None:
    """Only metadata members, each once: a second copy in the stream is one that a reader keeping the last
    (``tar -x``) and one keeping the first (``tar -x -k``) would see differently."""
    seen: set[str] = set()
    for member in members:
        if not is_metadata(member.path):
            raise ArchiveError(
                f"kit index: member {member.path} is not a metadata member; a format-2 index lists only "
                "those (payload files are placed by the signed manifest.files.jsonl)"
            )
        if member.path in seen:
            raise ArchiveError(f"kit index: member {member.path} listed twice; a kit has one of each")
        seen.add(member.path)


def check_own_frames(members: Iterable[_Member], frame_sizes: Sequence[int]) -> None:
    """Each member in frames of its own: one frame holding exactly it, or its header frame alone (the frames after
    it holding exactly its data is ``KitIndex.check_members``'s rule, checked first)."""
    for member in members:
        size = frame_sizes[member.frame]
        if member.at != 0 or size not in (layout.member_bytes(member.size), layout.BLOCK):
            raise ArchiveError(
                f"kit index: member {member.path}: a metadata member must lie in frames of its own (one frame, "
                f"or a header frame and its data frames), not at frame {member.frame} byte {member.at} of {size}"
            )
