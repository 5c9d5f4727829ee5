"""One parser of zstd frame headers (archive/zstdframes.parse_frame_header) behind both frame readers.

The streaming reader (format 1 members, metadata) and the whole-frame decoder (format 2 frames on workers)
must refuse the same headers for the same reason: these feed both the same hand-made bytes.
"""

from __future__ import annotations

import io

import pytest
import zstandard

from kitbuilder.archive import zstdframes
from kitbuilder.errors import ArchiveError

PAYLOAD = b"kit" * 400


def _frame() -> bytearray:
    return bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(PAYLOAD))


def _streamed(data: bytes, max_window: int = 1 << 24) -> bytes:
    reader = zstdframes.FrameReader(io.BytesIO(data), max_window=max_window)
    return b"".join(reader.iter_zstd_frame(max_output=1 << 20, what="m"))


def _whole(data: bytes, max_window: int = 1 << 24) -> bytes:
    return zstdframes.decode_whole(data, size=len(PAYLOAD), max_window=max_window, what="m")


def _reserved_bit() -> bytes:
    frame = _frame()
    frame[4] |= 0x08
    return bytes(frame)


def _bad_magic() -> bytes:
    frame = _frame()
    frame[0] ^= 0xFF
    return bytes(frame)


def _huge_window() -> bytes:
    # Not single-segment, a window descriptor of 2^(10+31) bytes and no content size.
    return bytes([0x28, 0xB5, 0x2F, 0xFD, 0x04, 31 << 3]) + bytes(8)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_reserved_bit, "reserved bit set in zstd frame header"),
        (_bad_magic, "not a zstd frame"),
        (_huge_window, "zstd window of"),
    ],
)
def test_both_readers_refuse_a_header_for_the_same_reason(make: object, reason: str) -> None:
    assert callable(make)
    data = make()
    for read in (_streamed, _whole):
        with pytest.raises(ArchiveError, match=reason):
            read(data)


def test_both_readers_decode_a_good_frame() -> None:
    data = bytes(_frame())
    assert _streamed(data) == _whole(data) == PAYLOAD


def test_parse_frame_header_reports_what_the_frame_declares() -> None:
    header = zstdframes.parse_frame_header(bytes(_frame()), max_window=1 << 24, where="m")
    assert header.content_size == len(PAYLOAD)
    assert header.has_checksum
    assert 0 < header.window <= 1 << 24
    with pytest.raises(ArchiveError, match="window"):
        zstdframes.parse_frame_header(bytes(_frame()), max_window=16, where="m")
