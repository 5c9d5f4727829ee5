"""The per-member and per-frame shortcuts of build and verify agree with the definitions they replace.

``tarfmt.build_header`` sums only the bytes that vary into the checksum; ``paths.problem_with`` accepts the common
path with one pattern before the component-by-component rules. Each is compared with the straightforward form:
the checksum over the whole block (Python's tarfile agrees on it), every rule applied to every component;
``zstdframes.raw_frame`` builds a stored frame in one copy, compared with the streaming raw writer.
"""

from __future__ import annotations

import itertools
import re
import tarfile

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.core import paths

_component = st.text(alphabet="aZ09._+@=,-/", min_size=1, max_size=12)
_path = st.lists(_component, min_size=1, max_size=12).map("/".join)


@settings(max_examples=400, deadline=None)
@given(_path, st.integers(min_value=0, max_value=8**11 - 1), st.integers(min_value=0, max_value=8**11 - 1))
def test_a_header_checksum_is_the_sum_of_its_whole_block(path: str, size: int, mtime: int) -> None:
    if paths.ustar_split(path) is None:
        return
    block = tarfmt.build_header(path, size, mtime)
    assert len(block) == tarfmt.BLOCK
    assert int(block[148:154], 8) == sum(block[:148]) + 8 * 32 + sum(block[156:])
    parsed = tarfile.TarInfo.frombuf(block, "ascii", "strict")  # a stock reader sees the same member
    assert (parsed.name, parsed.size, parsed.mtime) == (path, size, mtime)


def _problem_by_rules(path: str) -> str | None:
    """problem_with without its one-pattern shortcut."""
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"path component {part!r} is not allowed"
        if not paths.PORTABLE_COMPONENT.fullmatch(part):
            return f"component {part!r} has characters outside [A-Za-z0-9._+@=,-]"
        if paths.RESERVED_COMPONENT.fullmatch(part):
            return f"component {part!r} is reserved for kit's own state (.kit-*, .*.kit-lock, .*.part)"
    if len(path.encode()) > paths.MAX_PATH_BYTES or paths.ustar_split(path) is None:
        return "path too long for a ustar header (name 100 bytes, prefix 155 bytes)"
    return None


_tricky = st.sampled_from(["", ".", "..", ".kit-x", ".a.kit-lock", ".b.PART", "a", "Zz", "é", "a b", "-", "x" * 99])


@settings(max_examples=800, deadline=None)
@given(st.lists(st.one_of(_component, _tricky), min_size=0, max_size=14).map("/".join))
def test_the_one_pattern_shortcut_judges_paths_as_the_rules_do(path: str) -> None:
    assert paths.problem_with(path) == _problem_by_rules(path)


@given(st.text(max_size=120))
def test_any_text_is_judged_as_the_rules_do(path: str) -> None:
    assert paths.problem_with(path) == _problem_by_rules(path)


def test_the_reserved_names_all_start_with_a_dot() -> None:
    """The shortcut never looks at RESERVED_COMPONENT: it relies on every reserved name starting with '.'."""
    assert re.match(r"\\\.", paths.RESERVED_COMPONENT.pattern)
    assert all(alternative.startswith("\\.") for alternative in paths.RESERVED_COMPONENT.pattern.split("|"))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=3 * zstdframes.MAX_BLOCK + 5), st.integers(min_value=1, max_value=5))
def test_a_whole_raw_frame_is_what_the_streaming_raw_writer_makes(size: int, pieces: int) -> None:
    """zstdframes.raw_frame builds the frame in one copy; the streaming writer (fed in pieces) is the definition,
    and stock libzstd must read it back."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    writer = zstdframes.RawFrameWriter(size)
    cut = [size * k // pieces for k in range(pieces + 1)]
    streamed = writer.header + b"".join(b"".join(writer.blocks(data[a:b])) for a, b in itertools.pairwise(cut))
    frame = zstdframes.raw_frame(data)
    assert frame == streamed
    assert zstandard.ZstdDecompressor().decompress(frame) == data


# Every input build_header may meet: paths of every length around the 100-byte name and 155-byte prefix limits,
# with and without slashes, non-ASCII and control characters; numbers around 0 and the 11-digit octal limit,
# negative and far past it.
_limits = st.sampled_from([0, 1, 511, 512, 8**11 - 1, 8**11, 8**11 + 1, 2**53 - 1, -1, -(8**11)])
_numbers = st.one_of(_limits, st.integers(min_value=-(2**40), max_value=2**40))
_long_path = st.builds(
    lambda head, tail, sep: head + sep + tail,
    st.text(alphabet="ab/", min_size=0, max_size=160),
    st.text(alphabet="cd", min_size=0, max_size=105),
    st.sampled_from(["/", "", "//"]),
)
_any_path = st.one_of(
    _path,
    _long_path,
    st.integers(min_value=0, max_value=102).map(lambda n: "p" * n),
    st.text(max_size=110),
    st.text(alphabet="aé/\0\x7f", max_size=105),
)


def _outcome(build: object, path: str, size: int, mtime: int) -> bytes | type[BaseException]:
    assert callable(build)
    try:
        block = build(path, size, mtime)
    except ValueError as exc:
        return type(exc)
    assert isinstance(block, bytes)
    return block


@settings(max_examples=1500, deadline=None)
@given(_any_path, _numbers, _numbers)
def test_the_fast_header_is_the_general_header_for_every_input(path: str, size: int, mtime: int) -> None:
    """build_header's one-step form and general_header (field by field, checksum over the whole block) give the
    same bytes, or refuse the same input with the same exception type."""
    assert _outcome(tarfmt.build_header, path, size, mtime) == _outcome(tarfmt.general_header, path, size, mtime)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(_path, st.text(alphabet="ab/", min_size=1, max_size=100), st.just("n" * 100)),
    _numbers,
    _numbers,
)
def test_a_header_of_a_short_path_is_byte_for_byte_what_pythons_tarfile_writes(
    path: str, size: int, mtime: int
) -> None:
    """An independent writer: tarfile's ustar header for the same file (mode 644, owner 0, no owner names), or
    both refusing a number that does not fit 11 octal digits. tarfile leaves a regular file's device numbers empty
    where kits write zeros (docs/format.md §2), so those two fields and the checksum are compared on their own."""
    path = path[:100]
    info = tarfile.TarInfo(path)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, mtime, 0o644, 0, 0, "", ""
    try:
        expected: bytes | None = info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
    except ValueError:
        expected = None
    got: bytes | None
    try:
        got = tarfmt.build_header(path, size, mtime)
    except ValueError:
        got = None
    if expected is None or got is None:
        assert got == expected
        return
    devices = slice(329, 345)
    assert got[:148] == expected[:148] and got[156:329] == expected[156:329] and got[345:] == expected[345:]
    assert expected[devices] == bytes(16) and got[devices] == b"0000000\0" * 2
    assert got[148:156] == b"%06o\0 " % (sum(got[:148]) + 8 * 32 + sum(got[156:]))


def test_a_number_that_no_octal_field_holds_is_refused() -> None:
    for size, mtime in [(-1, 0), (0, -1), (8**11, 0), (0, 8**11)]:
        for build in (tarfmt.build_header, tarfmt.general_header):
            try:
                build("docs/a", size, mtime)
            except ValueError:
                continue
            raise AssertionError(f"{build.__name__} accepted size {size} mtime {mtime}")
