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
