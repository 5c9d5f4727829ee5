"""Reading format-2 kits: frames by digest, members inside them, and the whole stream on all cores.

A format-2 frame is read as one piece: its compressed bytes (``length`` of them, at
``offset``) are hashed and compared with the digest the index gives (for payload frames
the index's frames equal the signed manifest's, checked before any of this runs), then
decoded by the strict frame reader (``zstdframes.FrameReader``: no dictionary, window
cap, declared size, exactly one frame spanning exactly ``length`` bytes) into exactly
``size`` bytes. Members are then cut out of the decoded frames under the same member
rules as format 1 (``check_header``), content digests compared last, so a consumer
never completes with bytes that were not checked.

The streaming scan of the whole file on all cores is ``scan2.scan``; it checks frames and
members with the functions here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from kitbuilder.archive import layout, tarfmt, zstdframes
from kitbuilder.archive.index import KitIndex, MemberEntry, MemberSpan
from kitbuilder.core import paths
from kitbuilder.core.manifest import FrameEntry
from kitbuilder.errors import ArchiveError, IntegrityError


def _frame_words(against: str) -> str:
    return "their signed digest" if against == "signed" else "the index's frame digest"


def decode_frame(
    compressed: bytes, frame: FrameEntry, number: int, *, max_window: int, against: str = "index"
) -> bytes:
    """The decoded bytes of frame ``number``, checked: digest first, then one strict zstd frame of ``size`` bytes.

    IntegrityError when the compressed bytes are not the ones whose digest is given (an altered kit);
    ArchiveError for a frame that is malformed, longer or shorter than listed, or decodes to another size.
    """
    what = f"frame {number} at offset {frame.offset}"
    if len(compressed) != frame.length:
        raise ArchiveError(
            f"archive truncated at offset {frame.offset + len(compressed)}: {what} needs {frame.length} bytes"
        )
    if hashlib.sha256(compressed).hexdigest() != frame.sha256:
        raise IntegrityError(f"{what}: compressed bytes differ from {_frame_words(against)}")
    return zstdframes.decode_whole(compressed, size=frame.size, max_window=max_window, what=what)


def read_frame(stream: BinaryIO, frame: FrameEntry, number: int, *, max_window: int, against: str = "index") -> bytes:
    stream.seek(frame.offset)
    return decode_frame(stream.read(frame.length), frame, number, max_window=max_window, against=against)


# Who said what about a member, by where the expectation comes from (the signed manifest or only the index): it
# changes the wording of errors and one exit code (a member at the place of another is an index fault [5] when the
# index placed it, an altered kit [4] when the signed manifest did; docs/format.md §8.2, §8.9).
_PLACER = {"signed": "the signed index", "index": "the index"}
_SIZE_WORDS = {"signed": "signed size is", "index": "index says"}


def check_parsed_header(
    header: tarfmt.MemberHeader,
    *,
    path: str,
    size: int,
    against: str,
    found: str,
    placed: str,
    label: str,
    seen: dict[str, str] | None = None,
) -> None:
    """The one check of a parsed tar header against the member expected there (both formats, every reader).

    ``found`` says where the header was read (``at offset 123``), ``placed`` where the placer put ``path``
    (``there``); ``seen`` (when given) claims the header's path first, so two names that collide on a
    filesystem are refused in order. The mtime rule differs by format: the callers check it.
    """
    if seen is not None:
        clash = paths.claim(header.path, seen)
        if clash is not None:
            raise ArchiveError(f"member {header.path}: {clash}")
    if header.path != path:
        error = IntegrityError if against == "signed" else ArchiveError
        raise error(f"{header.path}: found {found}, expected {path} ({_PLACER[against]} says {path} {placed})")
    if header.size != size:
        raise IntegrityError(f"{label}: tar header says {header.size} bytes, {_SIZE_WORDS[against]} {size}")


def check_padding(data: bytes, label: str) -> None:
    """Tar padding must be zero bytes (both formats, every reader)."""
    if data.count(0) != len(data):
        raise ArchiveError(f"{label}: non-zero bytes in tar padding")


def check_member(
    block: bytes,
    span: MemberSpan,
    *,
    against: str,
    seen: dict[str, str] | None = None,
) -> tarfmt.MemberHeader:
    """The member's 512-byte header under the member rules, naming the expected path and size; mtime must be 0.

    A format-2 header is exactly the one the writer makes for the expected path and size, so the common case is
    one comparison with that; anything else is parsed under every rule to name what is wrong.
    """
    expected = tarfmt.build_header(span.path, span.size, 0)
    if seen is None and block == expected:
        problem = paths.problem_with(span.path)
        if problem is None:
            return tarfmt.MemberHeader(path=span.path, size=span.size, mode=tarfmt.FILE_MODE, mtime=0)
    header = tarfmt.parse_header(block, offset=span.stream_offset)
    found = f"in frame {span.frame} at byte {span.at}"
    label = f"member {span.path}"
    check_parsed_header(
        header, path=span.path, size=span.size, against=against, found=found, placed="there", label=label, seen=seen
    )
    if header.mtime != 0:
        raise ArchiveError(f"member {span.path}: tar header mtime {header.mtime}, format 2 writes 0")
    if block != expected:
        # Every field parse_header accepts is the writer's, so only a path split another way (prefix/name) is left.
        raise ArchiveError(f"member {span.path}: tar header is not the one kits write for this path")
    return header


def content_mismatch(span: MemberSpan, observed: str, against: str) -> IntegrityError:
    whose = "the signed one" if against == "signed" else "the index"
    return IntegrityError(
        f"member {span.path}: sha256 differs from {whose}: expected sha256 {span.sha256}, got {observed}"
    )


def check_in_frame(decoded: bytes, span: MemberSpan, *, against: str, seen: dict[str, str] | None = None) -> None:
    """A member lying wholly in one decoded frame: header checked, padding zero, content digest compared.

    The content is hashed in place (a view, not a copy): a frame may decode to 64 MiB.
    """
    at = span.at
    check_member(decoded[at : at + tarfmt.BLOCK], span, against=against, seen=seen)
    start = at + tarfmt.BLOCK
    check_padding(decoded[start + span.size : start + layout.padded(span.size)], f"member {span.path}")
    with memoryview(decoded) as view:
        observed = hashlib.sha256(view[start : start + span.size]).hexdigest()
    if observed != span.sha256:
        raise content_mismatch(span, observed, against)


def check_group(decoded: bytes, members: Sequence[MemberEntry], number: int, start: int, *, against: str) -> None:
    """Members lying wholly in decoded frame ``number`` (at ``start`` in the tar stream), in order, each checked as
    ``check_in_frame`` checks one: header exactly the writer's for its path and size, path valid, padding zero,
    content digest.

    One call per frame, on a worker: no object per member, no copy (the header compared and the content hashed in
    place), the digest compared as hex. The first member any check fails is put to ``check_in_frame``, whose
    message names what is wrong; so every error reads as it always did.
    """
    build, problem_with, sha256 = tarfmt.build_header, paths.problem_with, hashlib.sha256
    block, count = tarfmt.BLOCK, decoded.count
    with memoryview(decoded) as view:
        for member in members:
            path, at, size = member.path, member.at, member.size
            data = at + block
            end = data + size
            pad = data + (size + block - 1) // block * block
            if (
                decoded[at:data] != build(path, size, 0)
                or problem_with(path) is not None
                or count(0, end, pad) != pad - end
                or sha256(view[data:end]).hexdigest() != member.sha256
            ):
                span = MemberSpan(path, size, member.sha256, number, at, (), start + at)
                check_in_frame(decoded, span, against=against)
                raise ArchiveError(f"member {path}: failed its check in frame {number}")  # check_in_frame raised


def span_chunks(stream: BinaryIO, span: MemberSpan, *, max_window: int, against: str = "index") -> Iterator[bytes]:
    """The content of one member found through the index, in non-empty pieces, every check done before the last."""
    first = read_frame(stream, span.frames[0], span.frame, max_window=max_window, against=against)
    if len(span.frames) == 1:
        check_in_frame(first, span, against=against)
        start = span.at + tarfmt.BLOCK
        if span.size:
            yield first[start : start + span.size]
        return
    check_member(first, span, against=against)
    digest = hashlib.sha256()
    left = span.size
    held = b""
    for number, frame in enumerate(span.frames[1:], start=span.frame + 1):
        decoded = read_frame(stream, frame, number, max_window=max_window, against=against)
        take = min(left, len(decoded))
        piece = decoded[:take] if take < len(decoded) else decoded
        if take < len(decoded):
            check_padding(decoded[take:], f"member {span.path}")
        left -= take
        if piece:
            digest.update(piece)
        if held:
            yield held
        held = piece
    observed = digest.hexdigest()
    if observed != span.sha256:
        raise content_mismatch(span, observed, against)
    if held:
        yield held


def frames_of(index: KitIndex, spans: Sequence[MemberSpan]) -> list[int]:
    """The numbers of the frames that hold ``spans`` (for copying them verbatim), in order, once each."""
    out: list[int] = []
    for span in spans:
        for number in range(span.frame, span.frame + len(span.frames)):
            if not out or out[-1] != number:
                out.append(number)
    return out
