"""Attacks on the format-2 verify scan (scan2 + reader2.check_group) with kits a hostile signer can make.

The oracle is what `zstd -dc KIT | tar -x` extracts: verify exits 0 only if that is exactly the signed files;
anything else is refused with its documented exit code and one line on stderr naming the member, whatever the
number of worker threads, and nothing is written outside the target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kitbuilder.archive import reader, reader2, scan2, tarfmt
from kitbuilder.archive.index import MemberEntry, MemberSpan
from kitbuilder.core.manifest import FileEntry, FrameEntry
from kitbuilder.errors import ArchiveError, KitError
from kitbuilder.ops import kitfile
from tests.factories.cli import run_kit
from tests.factories.hostile import RELEASE, pseudo_random
from tests.factories.hostile2 import SignedFrame, crafted2, crafted_frames, tar_member
from tests.factories.keys import write_pair

CHUNK = 4 << 20


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def _zstd(data: bytes) -> bytes:
    return bytes(zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data))


def _refused(kit: Path, trusted: Path, code: int, line: str) -> None:
    before = sorted(kit.parent.rglob("*"))
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo")
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    assert line in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert sorted(kit.parent.rglob("*")) == before


def _scan(data: bytes, threads: int) -> scan2.Scanned:
    location = kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location
    return scan2.scan(
        io.BytesIO(data), location.index, location.index_offset, max_window=reader.Caps().max_window, threads=threads
    )


def _huge_member_kit() -> bytes:
    """A signed kit listing docs/huge.bin of 8 GiB (8^11 bytes: one more than a ustar size field holds), its data
    2,048 tiny frames of zeros each decoding to 4 MiB, so the frames really tile the member; its header frame holds
    512 zero bytes (no header can say that size)."""
    size = 8**11
    frames = [SignedFrame(_zstd(bytes(512)), 512, (("docs/huge.bin", 0, size, b"not read"),))]
    zeros = _zstd(bytes(CHUNK))
    frames += [SignedFrame(zeros, CHUNK)] * (size // CHUNK)
    return crafted_frames(frames)


def test_a_signed_member_larger_than_a_tar_header_holds_is_refused_not_a_crash(tmp_path: Path, trusted: Path) -> None:
    """Was exit 70 (ValueError from build_header: '8589934592 does not fit a 12-byte octal field')."""
    kit = tmp_path / "huge.kit.tar.zst"
    kit.write_bytes(_huge_member_kit())
    _refused(kit, trusted, 5, "member docs/huge.bin: size 8589934592 does not fit a tar header")


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_the_huge_member_is_refused_at_its_header_whatever_the_threads(threads: int) -> None:
    with pytest.raises(ArchiveError, match=r"^member docs/huge\.bin: size 8589934592 does not fit"):
        _scan(_huge_member_kit(), threads)


@pytest.mark.parametrize(
    ("path", "size", "message"),
    [
        ("docs/a.md", 8**11, r"^member docs/a\.md: size 8589934592 does not fit"),
        ("docs/é.md", 1, r"^member docs/\\xe9\.md: unsafe path"),
        ("d/" + "p" * 160, 1, r"^member d/p+: unsafe path: path too long"),
    ],
)
def test_a_member_no_header_can_describe_is_an_archive_error_in_every_check(path: str, size: int, message: str) -> None:
    """check_member (a large member's header, `kit inspect`) and check_group (a group frame) refuse a path or size
    that no ustar header holds with the kit's fault (exit 5), not a ValueError (exit 70)."""
    decoded = tar_member("docs/a.md", b"x")
    span = MemberSpan(path, size, "0" * 64, 0, 0, (), 0)
    with pytest.raises(ArchiveError, match=message):
        reader2.check_member(decoded[: tarfmt.BLOCK], span, against="signed")
    with pytest.raises(ArchiveError, match=message):
        reader2.check_group(decoded, [MemberEntry(path, 0, 0, size, "0" * 64)], 0, 0, against="signed")


# Two group frames split by a large member (its header frame, then one chunk frame), another large member after
# them; docs/ONE/A.md, in the middle of the second group, clashes with docs/one/a.md of the first (same name up to
# case).
ORDERED = [
    ("docs/one/a.md", b"first\n" * 200),
    ("docs/one/b.md", b"second\n" * 90),
    ("docs/large.bin", pseudo_random(3 << 20)),
    ("docs/two/c.md", b"third\n" * 70),
    ("docs/ONE/A.md", b"clash\n" * 10),
    ("docs/two/d.md", b"after the clash\n"),
    ("docs/two/tail.bin", pseudo_random(2 << 20, seed=7)),
]


def _frames_of(data: bytes) -> list[list[str]]:
    index = kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location.index
    held: dict[int, list[str]] = {}
    for member in index.members:
        assert isinstance(member, MemberEntry)
        held.setdefault(member.frame, []).append(member.path)
    return [held.get(n, []) for n in range(len(index.frames))]


def _corrupt(number: int) -> Callable[[bytearray, dict[str, Any]], None]:
    def raw(out: bytearray, index: dict[str, Any]) -> None:
        frame = index["frames"][number]
        out[frame["offset"] + frame["length"] // 2] ^= 0xFF

    return raw


def _wrong_digest(path: str) -> Callable[[list[FileEntry], list[FrameEntry]], None]:
    def signed(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        number = next(n for n, f in enumerate(files) if f.path == path)
        files[number] = dataclasses.replace(files[number], sha256=hashlib.sha256(b"other").hexdigest())

    return signed


def _first_error(data: bytes, threads: int, out: Path | None = None) -> str:
    location = kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location
    with pytest.raises(KitError) as caught:
        scan2.scan(
            io.BytesIO(data),
            location.index,
            location.index_offset,
            max_window=reader.Caps().max_window,
            threads=threads,
            extract_to=out,
        )
    return f"{type(caught.value).__name__}: {caught.value}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("sound", r"ArchiveError: member docs/ONE/A\.md: duplicate of docs/one/a\.md"),
        ("first group frame damaged", r"IntegrityError: frame 0 at offset 0: compressed bytes differ"),
        ("first group member's digest", r"IntegrityError: member docs/one/b\.md: sha256 differs"),
        ("large member's chunk damaged", r"IntegrityError: frame 2 at offset \d+: compressed bytes differ"),
        ("the clashing frame damaged", r"IntegrityError: frame 3 at offset \d+: compressed bytes differ"),
        ("a member after the clash in its frame", r"IntegrityError: member docs/two/d\.md: sha256 differs"),
        ("a frame after the clash damaged", r"ArchiveError: member docs/ONE/A\.md: duplicate of docs/one/a\.md"),
    ],
)
def test_the_first_fault_in_archive_order_is_reported_whatever_the_threads(
    case: str, expected: str, tmp_path: Path
) -> None:
    """A clash among group frames and damage before, at or after it: the same one error for 0, 1, 2 and 8 workers,
    verifying or extracting; extraction writes nothing of the clashing frame or after it, nothing outside."""
    layout = _frames_of(crafted2(ORDERED).data)
    assert layout[:6] == [
        ["docs/one/a.md", "docs/one/b.md"],
        ["docs/large.bin"],
        [],
        ["docs/two/c.md", "docs/ONE/A.md", "docs/two/d.md"],
        ["docs/two/tail.bin"],
        [],
    ], layout
    hooks: dict[str, dict[str, Any]] = {
        "sound": {},
        "first group frame damaged": {"raw_hook": _corrupt(0)},
        "first group member's digest": {"signed_hook": _wrong_digest("docs/one/b.md")},
        "large member's chunk damaged": {"raw_hook": _corrupt(2)},
        "the clashing frame damaged": {"raw_hook": _corrupt(3)},
        "a member after the clash in its frame": {"signed_hook": _wrong_digest("docs/two/d.md")},
        "a frame after the clash damaged": {"raw_hook": _corrupt(5)},
    }
    data = crafted2(ORDERED, **hooks[case]).data
    for threads in (0, 1, 2, 8):
        assert re.match(expected, _first_error(data, threads)), (threads, _first_error(data, threads))
        out = tmp_path / f"out-{threads}"
        out.mkdir()
        assert re.match(expected, _first_error(data, threads, out))
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert not set(written) & {"docs/two/c.md", "docs/ONE/A.md", "docs/two/d.md"}, written
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out-{t}" for t in (0, 1, 2, 8)]
