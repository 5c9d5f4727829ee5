"""Format-2 layout constants and the one grouping rule (docs/format.md §0.1, §0.2), in one place.

A format-2 kit's unit is the zstd frame, not the member: runs of small members share a
*group* frame, a large member is its header frame then fixed-size *chunk* frames, and each
metadata member is one frame. Every frame is compressed independently and single-threaded,
so the bytes never depend on how many threads compressed them.
"""

from __future__ import annotations

import hashlib

BLOCK = 512
END_SIZE = 2 * BLOCK
# A member whose padded data is at least LARGE bytes is large: header frame, then CHUNK-sized data frames.
LARGE = 1 << 20
CHUNK = 4 << 20
# Bounds of a group frame's decompressed size.
GROUP_MIN = 512 << 10
GROUP_MAX = 4 << 20
# The most one frame may decompress to (docs/format.md §0.3 rule 2): a group stays under GROUP_MAX + LARGE + 512
# (it is closed once past GROUP_MAX and a small member takes under LARGE + 512), a chunk is CHUNK, and a metadata
# member is one frame only below LARGE (a larger one is a header frame and CHUNK frames). Sizes are multiples of
# 512, so GROUP_MAX + LARGE bounds them all: a reader decoding a frame never holds more than this.
MAX_FRAME_SIZE = GROUP_MAX + LARGE
# A cut point after a member whose path hashes below this (1 in 4 paths), once the group is past GROUP_MIN.
_CUT_BELOW = 64
# Decided once per large member from this much of its start: < 3% saved at level 1 => raw-block frames.
RAW_TRIAL = 1 << 20


def padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def member_bytes(size: int) -> int:
    """Bytes one member occupies in the tar stream: header, data, padding."""
    return BLOCK + padded(size)


def is_large(size: int) -> bool:
    return padded(size) >= LARGE


def closes_group(group_size: int, path: str) -> bool:
    """Whether the open group, ``group_size`` bytes after appending member ``path``, becomes a frame now.

    Content-independent: a cut depends only on the path and the running size, so inserting, removing
    or changing one file moves only the boundaries around it and later groups resynchronise.
    """
    if group_size >= GROUP_MAX:
        return True
    return group_size >= GROUP_MIN and hashlib.sha256(path.encode()).digest()[0] < _CUT_BELOW
