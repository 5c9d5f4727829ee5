"""Per-file content deltas (docs/delta.md, "Content deltas"): a target file's bytes as one zstd frame compressed
with the base file's bytes as a raw-content dictionary. Pure functions on bytes.

Why content, not compressed frames: compressed bytes diverge after the first change, so a group frame encoded
against the base's frame costs a fifth of the frame for a 40-byte change (measured: 80 KB of 424 KB); the
content encoded against the base content costs about a hundred bytes.

A patch is exactly one zstd frame: it declares its content size (which must be the target's signed size, checked
before anything is decoded, so a frame that claims more is never inflated), carries the XXH64 checksum, names no
dictionary id (the dictionary is the base content the signed member name gives) and has a window of at most
``MAX_WINDOW``. Decoding stops at the declared size: libzstd refuses a frame that produces more.
"""

from __future__ import annotations

import hashlib
from typing import Any

import zstandard

from kitbuilder.archive import layout, zstdframes
from kitbuilder.errors import ArchiveError, IntegrityError

# Level 19: a patch is made once per changed file at build time and is a few hundred bytes; the cost is the build's.
PATCH_LEVEL = 19
# Both sides of a patch are small members (under LARGE), so the dictionary and the output stay under 1 MiB each and
# the window that reaches back over both is at most 2 MiB.
MAX_WINDOW = 1 << 22
# A base of fewer bytes than this gives nothing to refer to.
MIN_BASE = 64


def usable(base_size: int, target_size: int) -> bool:
    """A pair of sizes a patch may be made for (and decoded with): both small members, the base not trivial."""
    return MIN_BASE <= base_size < layout.LARGE and 0 < target_size < layout.LARGE


def _dictionary(base: bytes) -> Any:
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def encode(target: bytes, base: bytes) -> bytes:
    """The patch that turns ``base`` into ``target`` (both under LARGE)."""
    window_log = max(10, (len(base) + len(target)).bit_length())
    params = zstandard.ZstdCompressionParameters.from_level(
        PATCH_LEVEL,
        source_size=len(target),
        window_log=window_log,
        write_checksum=1,
        write_content_size=1,
        write_dict_id=0,
        threads=0,
    )
    return bytes(zstandard.ZstdCompressor(compression_params=params, dict_data=_dictionary(base)).compress(target))


def decode(patch: bytes, base: bytes, *, size: int, sha256: str, what: str) -> bytes:
    """The target bytes ``patch`` makes from ``base``: exactly ``size`` bytes whose SHA-256 is ``sha256``.

    IntegrityError (the delta's signed member does not make the signed content) for a frame that is malformed,
    declares another size, decodes to other bytes or has trailing bytes; never more than ``size`` bytes are made.
    """
    if len(patch) < 5:
        raise IntegrityError(f"{what}: not a zstd frame ({len(patch)} bytes); the delta is corrupt, obtain it again")
    try:
        if len(patch) < zstdframes.header_length(patch, where=what):
            raise ArchiveError(f"{what}: zstd frame header is truncated")
        header = zstdframes.parse_frame_header(patch, max_window=MAX_WINDOW, where=what)
    except ArchiveError as exc:
        raise IntegrityError(f"{exc.message}; the delta is corrupt, obtain it again") from exc
    if header.content_size != size:
        shown = "no size" if header.content_size < 0 else f"{header.content_size} bytes"
        raise IntegrityError(
            f"{what}: declares {shown}, the target signs {size}; the delta is corrupt, obtain it again"
        )
    try:
        decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary(base), max_window_size=MAX_WINDOW)
        out = bytes(decompressor.decompress(patch, max_output_size=size, allow_extra_data=False))
    except zstandard.ZstdError as exc:
        raise IntegrityError(
            f"{what}: does not decode against its base ({exc}); the delta is corrupt, obtain it again"
        ) from exc
    if len(out) != size or hashlib.sha256(out).hexdigest() != sha256:
        raise IntegrityError(
            f"{what}: decodes to bytes other than the target's signed content (sha256 {sha256[:16]}…); the delta is "
            "corrupt, obtain it again"
        )
    return out
