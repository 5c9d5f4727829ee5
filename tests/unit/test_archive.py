"""Archive layer: tar headers and zstd frames, including hostile byte strings."""

from __future__ import annotations

import io

import pytest
import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.zstdframes import FrameReader
from kitbuilder.errors import ArchiveError


def _retype(header: bytes, typeflag: bytes, **fields: bytes) -> bytes:
    block = bytearray(header)
    block[156:157] = typeflag
    for offset, value in ((int(k[1:]), v) for k, v in fields.items()):
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def test_header_round_trip() -> None:
    header = tarfmt.build_header("docs/a.md", 1234, 1700000000)
    parsed = tarfmt.parse_header(header, offset=0)
    assert (parsed.path, parsed.size, parsed.mode, parsed.mtime) == ("docs/a.md", 1234, 0o644, 1700000000)


@pytest.mark.parametrize(
    ("typeflag", "words"),
    [
        (b"2", "symbolic link"),
        (b"1", "hard link"),
        (b"3", "character device"),
        (b"5", "directory"),
        (b"6", "FIFO"),
        (b"x", "PAX extended"),
        (b"g", "PAX global"),
        (b"L", "GNU long-name"),
        (b"S", "sparse"),
    ],
)
def test_non_regular_types_are_refused_by_name(typeflag: bytes, words: str) -> None:
    header = _retype(tarfmt.build_header("a", 0, 0), typeflag)
    with pytest.raises(ArchiveError, match=words):
        tarfmt.parse_header(header, offset=0)


@pytest.mark.parametrize(
    ("mode", "words"), [(b"0004755", "setuid"), (b"0000666", "world-writable"), (b"0001644", "sticky")]
)
def test_dangerous_modes_are_refused(mode: bytes, words: str) -> None:
    header = _retype(tarfmt.build_header("a", 0, 0), b"0", o100=mode)
    with pytest.raises(ArchiveError, match=words):
        tarfmt.parse_header(header, offset=0)


def test_checksum_mismatch_is_refused() -> None:
    header = bytearray(tarfmt.build_header("a", 0, 0))
    header[0:1] = b"b"
    with pytest.raises(ArchiveError, match="checksum"):
        tarfmt.parse_header(bytes(header), offset=0)


def _frame(data: bytes, **kwargs: object) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=True, **kwargs).compress(data)  # type: ignore[arg-type]


def test_frame_reader_finds_exact_boundaries() -> None:
    first, second = _frame(b"a" * 300_000), _frame(b"hello")
    reader = FrameReader(io.BytesIO(first + second), max_window=1 << 24)
    assert b"".join(reader.iter_zstd_frame(max_output=300_000, what="t")) == b"a" * 300_000
    assert reader.offset == len(first)
    assert b"".join(reader.iter_zstd_frame(max_output=5, what="t")) == b"hello"
    assert reader.at_end()


def test_declared_size_over_bound_is_refused_before_decompressing() -> None:
    reader = FrameReader(io.BytesIO(_frame(bytes(10_000_000))), max_window=1 << 24)
    with pytest.raises(ArchiveError, match="declares 10000000 bytes"):
        next(reader.iter_zstd_frame(max_output=1000, what="bomb"))


def test_undeclared_size_bomb_stops_at_the_bound() -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    stream = compressor.compressobj()
    bomb = stream.compress(bytes(50_000_000)) + stream.flush()
    reader = FrameReader(io.BytesIO(bomb), max_window=1 << 24)
    produced = 0
    with pytest.raises(ArchiveError, match="more than the 1000000 bytes"):
        for chunk in reader.iter_zstd_frame(max_output=1_000_000, what="bomb"):
            produced += len(chunk)
    assert produced <= 1_000_000 + (8 << 20)


def test_window_over_cap_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=26, write_content_size=False)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = stream.compress(bytes(1000)) + stream.flush()
    reader = FrameReader(io.BytesIO(data), max_window=1 << 24)
    with pytest.raises(ArchiveError, match="window"):
        next(reader.iter_zstd_frame(max_output=10**9, what="w"))


def test_truncated_frame_is_refused() -> None:
    data = _frame(bytes(range(256)) * 1000)
    reader = FrameReader(io.BytesIO(data[:-10]), max_window=1 << 24)
    with pytest.raises(ArchiveError, match="truncated"):
        b"".join(reader.iter_zstd_frame(max_output=10**6, what="t"))


def test_footer_round_trip_and_rejection() -> None:
    assert zstdframes.parse_footer(zstdframes.footer_frame(1234)) == 1234
    with pytest.raises(ArchiveError, match="footer"):
        zstdframes.parse_footer(bytes(zstdframes.FOOTER_SIZE))
