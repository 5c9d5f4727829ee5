"""The scan's per-frame check of a group of small members, and the path claims made while planning the scan.

``reader2.check_group`` checks every member of a decoded group frame in one call (on a worker); a member it
refuses is put to ``check_in_frame``, so the error is the one the member-by-member check gives. The scan claims
paths while planning frames and raises a clash when that frame's result is consumed: faults of earlier frames and
of that frame's own members come first. Real kits from the real writer; damage by flipping bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from kitbuilder.archive import reader, reader2, scan2, tarfmt
from kitbuilder.archive.index import KitIndex, MemberEntry, MemberSpan
from kitbuilder.archive.locate import IndexLocation
from kitbuilder.core.manifest import FileEntry, FrameEntry
from kitbuilder.errors import ArchiveError, IntegrityError, KitError
from kitbuilder.ops import kitfile
from tests.factories.hostile import pseudo_random
from tests.factories.hostile2 import crafted2

KiB = 1 << 10
# Members of every shape a group holds: empty, under one block, exactly one block, padded, over 2 KiB (hashed
# without the GIL), incompressible.
GROUP = [
    ("docs/empty.txt", b""),
    ("docs/one.txt", b"x"),
    ("docs/block.txt", b"b" * 512),
    ("docs/padded.sql", b"SELECT 1;\n" * 77),
    ("docs/big.json", b'{"k": 1}\n' * 900),
    ("docs/noise.bin", pseudo_random(40 * KiB)),
]


def _location(data: bytes) -> IndexLocation:
    return kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location


def _group(data: bytes) -> tuple[bytes, list[MemberEntry]]:
    """Frame 0 of the kit decoded, and the members it holds."""
    index = _location(data).index
    frame = index.frames[0]
    decoded = reader2.decode_frame(data[frame.offset : frame.offset + frame.length], frame, 0, max_window=1 << 27)
    members = [m for m in index.members if isinstance(m, MemberEntry) and m.frame == 0]
    return decoded, members


def _scan(data: bytes, threads: int, extract_to: Path | None = None) -> scan2.Scanned:
    location = _location(data)
    return scan2.scan(
        io.BytesIO(data),
        location.index,
        location.index_offset,
        max_window=reader.Caps().max_window,
        threads=threads,
        extract_to=extract_to,
    )


def _one_by_one(decoded: bytes, members: list[MemberEntry]) -> None:
    for member in members:
        span = MemberSpan(member.path, member.size, member.sha256, 0, member.at, (), member.at)
        reader2.check_in_frame(decoded, span, against="signed")


def test_a_sound_group_passes_and_every_member_of_it_is_counted() -> None:
    data = crafted2(GROUP).data
    decoded, members = _group(data)
    assert [m.path for m in members] == [p for p, _ in GROUP]
    reader2.check_group(decoded, members, 0, 0, against="signed")
    scanned = _scan(data, 2)
    assert scanned.payload_bytes == sum(m.size for m in _location(data).index.members)


# Where a byte is flipped, relative to a member's header: in the path, the size field, the mtime field, the
# checksum, the ustar magic, the first content byte, the last padding byte.
DAMAGE = {"path": 6, "size": 130, "mtime": 140, "checksum": 150, "magic": 258, "content": 512, "padding": -1}


@pytest.mark.parametrize("where", sorted(DAMAGE))
@pytest.mark.parametrize("victim", ["docs/one.txt", "docs/padded.sql", "docs/noise.bin"])
def test_a_damaged_member_is_refused_with_the_error_the_member_check_gives(where: str, victim: str) -> None:
    decoded, members = _group(crafted2(GROUP).data)
    member = next(m for m in members if m.path == victim)
    offset = DAMAGE[where]
    if offset < 0:  # the member's last padding byte
        offset = tarfmt.BLOCK + (member.size + tarfmt.BLOCK - 1) // tarfmt.BLOCK * tarfmt.BLOCK - 1
    damaged = bytearray(decoded)
    damaged[member.at + offset] ^= 0x41
    with pytest.raises(KitError) as expected:
        _one_by_one(bytes(damaged), members)
    with pytest.raises(KitError) as caught:
        reader2.check_group(bytes(damaged), members, 0, 0, against="signed")
    assert type(caught.value) is type(expected.value)
    assert str(caught.value) == str(expected.value)


def test_a_member_whose_signed_digest_differs_is_named_with_both_digests() -> None:
    decoded, members = _group(crafted2(GROUP).data)
    other = hashlib.sha256(b"other").hexdigest()
    members[3] = dataclasses.replace(members[3], sha256=other)
    with pytest.raises(IntegrityError, match=f"member docs/padded.sql: sha256 differs from the signed one: "
                       f"expected sha256 {other}, got "):  # fmt: skip
        reader2.check_group(decoded, members, 0, 0, against="signed")


CLASH = [("docs/A.md", b"one\n" * 300), ("docs/b.md", b"two"), ("docs/a.md", b"three\n" * 500)]


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_path_clash_is_refused_in_order(threads: int) -> None:
    with pytest.raises(ArchiveError, match=r"^member docs/a\.md: duplicate of docs/A\.md"):
        _scan(crafted2(CLASH).data, threads)


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_fault_of_an_earlier_member_of_the_clashing_frame_comes_before_the_clash(threads: int) -> None:
    def wrong_digest(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        files[1] = dataclasses.replace(files[1], sha256=hashlib.sha256(b"other").hexdigest())

    with pytest.raises(IntegrityError, match="member docs/b.md: sha256 differs from the signed one"):
        _scan(crafted2(CLASH, signed_hook=wrong_digest).data, threads)


def _corrupt(number: int) -> Callable[[bytearray, dict[str, object]], None]:
    def raw(out: bytearray, index: dict[str, object]) -> None:
        frames = index["frames"]
        assert isinstance(frames, list)
        out[frames[number]["offset"] + frames[number]["length"] // 2] ^= 0xFF

    return raw


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_damaged_frame_before_a_clashing_large_member_is_the_fault_reported(threads: int) -> None:
    """docs/a.bin clashes with docs/A.md and is large (its header alone in frame 1): frame 0's damage comes first;
    and with frame 0 sound the clash is reported, though the frames after it are never read."""
    files = [("docs/A.md", b"one\n" * 300), ("docs/a.md", pseudo_random(2 << 20))]
    index = _location(crafted2(files).data).index
    assert isinstance(index, KitIndex) and index.frames[1].size == tarfmt.BLOCK  # the large member's header frame
    with pytest.raises(IntegrityError, match="^frame 0 "):
        _scan(crafted2(files, raw_hook=_corrupt(0)).data, threads)
    with pytest.raises(ArchiveError, match=r"^member docs/a\.md: duplicate of docs/A\.md"):
        _scan(crafted2(files, raw_hook=_corrupt(2)).data, threads)


@pytest.mark.parametrize("threads", [0, 2])
def test_extraction_writes_every_member_of_a_group_as_checked(threads: int, tmp_path: Path) -> None:
    data = crafted2([*GROUP, ("docs/large.bin", pseudo_random(3 << 20))]).data
    out = tmp_path / "out"
    out.mkdir()
    _scan(data, threads, extract_to=out)
    for path, content in [*GROUP, ("docs/large.bin", pseudo_random(3 << 20))]:
        assert (out / path).read_bytes() == content
