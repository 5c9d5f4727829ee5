"""Archive layer: tar headers and zstd frames, including hostile byte strings."""

from __future__ import annotations

import io

import pytest
import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.zstdframes import FrameReader
from kitbuilder.errors import ArchiveError
from tests.factories.hostile import frame_encodings, frame_header, hidden_member, raw_block, raw_blocks, rle_frame


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


# ---------------------------------------------------------------------------------------------------------------
# zstd frame encodings as a class, cross-checked against stock zstd


def _stock_zstd(frame: bytes) -> tuple[bool, bytes]:
    """Whether stock `zstd -dc` decodes ``frame`` without error, and what it yields."""
    import subprocess

    result = subprocess.run(["zstd", "-dc", "-q"], input=frame, capture_output=True)
    return result.returncode == 0, result.stdout


def _kit_reads(frame: bytes, bound: int) -> tuple[bool, bytes, str]:
    """Whether FrameReader reads ``frame`` as exactly one frame filling the input, its output, its error."""
    reader = FrameReader(io.BytesIO(frame), max_window=1 << 24)
    try:
        out = b"".join(reader.iter_zstd_frame(max_output=bound, what="member docs/x.md"))
    except ArchiveError as exc:
        return False, b"", str(exc)
    return reader.at_end(), out, "" if reader.at_end() else "bytes after the frame"


@pytest.mark.parametrize("name", sorted(frame_encodings(b"x" * 600 + bytes(424), hidden_member())))
def test_frame_encoding_is_read_exactly_as_stock_zstd_reads_it(name: str) -> None:
    """Kit accepts a frame only if stock zstd decodes it without error to the same bytes, which are the payload."""
    payload = b"x" * 600 + bytes(424)
    frame, acceptable = frame_encodings(payload, hidden_member())[name]
    expected = b"" if name.startswith("empty_") else payload
    accepted, out, error = _kit_reads(frame, len(expected))
    assert accepted == acceptable, f"{name}: kit {'accepted' if accepted else 'refused: ' + error}"
    if accepted:
        assert out == expected
        assert _stock_zstd(frame) == (True, expected), f"{name}: kit accepted what stock zstd reads otherwise"
    elif error != "bytes after the frame":  # those the stream reader refuses at the next frame
        assert "\n" not in error and "member docs/x.md" in error


@pytest.mark.parametrize("size", [1, 255, 256, 1000, 128 * 1024, 128 * 1024 + 1, 5 << 20])
def test_declared_size_zero_is_decoded_not_trusted(size: int) -> None:
    """FCS = 0 followed by blocks holding ``size`` bytes: refused, whatever the block type or size."""
    data = bytes(range(256)) * (size // 256 + 1)
    for frame in (
        frame_header(content_size=0, fcs_bytes=4) + raw_blocks(data[:size]),
        frame_header(content_size=0, fcs_bytes=8) + raw_blocks(data[:size]),
        frame_header(content_size=0, fcs_bytes=4) + rle_frame(size)[6:],
    ):
        reader = FrameReader(io.BytesIO(frame), max_window=1 << 24)
        with pytest.raises(ArchiveError, match="corrupt zstd data|more than the 0 bytes"):
            b"".join(reader.iter_zstd_frame(max_output=0, what="t"))


def test_empty_frame_as_the_writer_makes_it_is_accepted() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compressobj(size=0).flush()
    reader = FrameReader(io.BytesIO(frame), max_window=1 << 24)
    assert b"".join(reader.iter_zstd_frame(max_output=0, what="t")) == b""
    assert reader.at_end()


def test_one_shot_frame_of_empty_blocks_does_not_gather_unbounded_input() -> None:
    """A small declared size with megabytes of blocks that decode to nothing: read in batches, then refused."""
    empty_raw = raw_block(b"", last=False)
    frame = frame_header(content_size=1000, fcs_bytes=4) + empty_raw * 1_000_000 + raw_block(bytes(1000), last=True)
    reader = FrameReader(io.BytesIO(frame), max_window=1 << 24)
    peak = 0
    chunks = reader.iter_zstd_frame(max_output=1000, what="t")
    out = b""
    for chunk in chunks:
        peak = max(peak, len(reader._buffer))  # noqa: SLF001 - the read buffer is what must stay bounded
        out += chunk
    assert out == bytes(1000)
    assert peak < 4 << 20


def test_truncated_stream_is_refused_not_short() -> None:
    """A frame cut anywhere: never a short result without an error."""
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(range(256)) * 4000)
    for cut in (5, 6, 9, len(frame) // 2, len(frame) - 1):
        reader = FrameReader(io.BytesIO(frame[:cut]), max_window=1 << 24)
        with pytest.raises(ArchiveError, match="truncated|did not end"):
            b"".join(reader.iter_zstd_frame(max_output=10**7, what="t"))
