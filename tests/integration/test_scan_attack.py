"""Attacks on the format-2 verify scan (scan2 + reader2.check_group) with kits a hostile signer can make.

The oracle is what `zstd -dc KIT | tar -x` extracts: verify exits 0 only if that is exactly the signed files;
anything else is refused with its documented exit code and one line on stderr naming the member, whatever the
number of worker threads, and nothing is written outside the target.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import zstandard

from kitbuilder.archive import reader, reader2, scan2, tarfmt
from kitbuilder.archive.index import MemberEntry, MemberSpan
from kitbuilder.errors import ArchiveError
from kitbuilder.ops import kitfile
from tests.factories.cli import run_kit
from tests.factories.hostile import RELEASE
from tests.factories.hostile2 import SignedFrame, crafted_frames, tar_member
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
