"""Zstandard frames, read one pass with exact boundaries and bounded output.

We parse frame and block headers ourselves (RFC 8878 §3.1) rather than let the
decompressor find frame ends, because the verifier needs three things the
python-zstandard stream APIs do not give together: the exact offset where each
frame ends (to check the index), a hard bound on output before it is produced
(a zstd bomb must cost neither memory nor disk), and every input byte read once.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from kitbuilder.errors import ArchiveError

ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_FIRST = 0x184D2A50
SKIPPABLE_LAST = 0x184D2A5F
INDEX_MAGIC = 0x184D2A5B
FOOTER_MAGIC = 0x184D2A5F
FOOTER_TAG = b"KITINDEX"
FOOTER_SIZE = 8 + len(FOOTER_TAG) + 8
MAX_BLOCK = 128 * 1024
_READ_CHUNK = 1 << 20
# Feed the decompressor in batches bounded in input and in worst-case output.
_BATCH_INPUT = 1 << 20
_BATCH_OUTPUT = 8 << 20
_ONE_SHOT_MAX = 4 << 20


def skippable_frame(magic: int, data: bytes) -> bytes:
    return struct.pack("<II", magic, len(data)) + data


# Frame_Header_Descriptor 0xC0: 8-byte Frame_Content_Size, not single-segment, no checksum, no dictionary;
# Window_Descriptor 0x38: a 128 KiB window, the largest block a raw frame holds.
_RAW_FRAME_DESCRIPTOR = 0xC0
_RAW_FRAME_WINDOW = 0x38


class RawFrameWriter:
    """A zstd frame of raw (stored) blocks, for data that does not compress: no compressor CPU at all.

    Any zstd decoder reads it (RFC 8878 §3.1.1.2, Block_Type 0). It carries no XXH64
    checksum; kit checks content by SHA-256 anyway. Feed exactly ``size`` bytes.
    """

    def __init__(self, size: int) -> None:
        self._left = size
        self._pending = b""
        self.header = struct.pack("<IBBQ", ZSTD_MAGIC, _RAW_FRAME_DESCRIPTOR, _RAW_FRAME_WINDOW, size)
        if size == 0:
            raise ValueError("a raw frame needs content; compress empty data the usual way")

    def blocks(self, data: bytes) -> list[bytes]:
        """Block-framed pieces for ``data`` (buffering a partial block until it is full or the frame ends)."""
        if len(data) > self._left - len(self._pending):
            raise ValueError("more data than the frame's declared size")
        buffer = self._pending + data if self._pending else data
        out: list[bytes] = []
        position = 0
        total = len(buffer)
        complete = total == self._left  # the rest of the frame is all here: flush the last, short block too
        while total - position >= MAX_BLOCK or (complete and position < total):
            size = min(MAX_BLOCK, total - position)
            self._left -= size
            last = 1 if self._left == 0 else 0
            out.append(struct.pack("<I", last | (size << 3))[:3])
            out.append(buffer[position : position + size])
            position += size
        self._pending = buffer[position:]
        return out


def raw_frame(data: bytes) -> bytes:
    """``data`` (non-empty) as one whole raw-block frame: the bytes ``RawFrameWriter`` makes when fed it at once,
    built with one copy of ``data`` (its blocks are views into it) instead of three."""
    writer = RawFrameWriter(len(data))
    view = memoryview(data)
    parts: list[bytes | memoryview] = [writer.header]
    total = len(data)
    for position in range(0, total, MAX_BLOCK):
        size = min(MAX_BLOCK, total - position)
        last = 1 if position + size == total else 0
        parts.append(struct.pack("<I", last | (size << 3))[:3])
        parts.append(view[position : position + size])
    return b"".join(parts)


def footer_frame(index_offset: int) -> bytes:
    return skippable_frame(FOOTER_MAGIC, FOOTER_TAG + struct.pack("<Q", index_offset))


def parse_footer(data: bytes) -> int:
    """The index frame offset named by the footer, or ArchiveError."""
    if len(data) != FOOTER_SIZE:
        raise ArchiveError("kit footer: file too short to be a kit")
    magic, size = struct.unpack_from("<II", data)
    if magic != FOOTER_MAGIC or size != FOOTER_SIZE - 8 or data[8:16] != FOOTER_TAG:
        raise ArchiveError("kit footer: the file does not end with a kitbuilder index footer (not a kit, or truncated)")
    (offset,) = struct.unpack_from("<Q", data, 16)
    return int(offset)


@dataclass(frozen=True)
class FrameHeader:
    """What a zstd frame header (RFC 8878 3.1.1.1) declares, once it has passed the kit rules."""

    has_checksum: bool
    content_size: int  # -1: not declared
    window: int


def _layout(data: bytes, where: str) -> tuple[int, int, int, int]:
    """Magic and descriptor checked; (single_segment, dictionary id size, content size field size, header length)."""
    magic = int(struct.unpack_from("<I", data)[0])
    if magic != ZSTD_MAGIC:
        raise ArchiveError(f"{where}: not a zstd frame (magic {magic:#010x})")
    descriptor = data[4]
    if descriptor & 0x08:
        raise ArchiveError(f"{where}: reserved bit set in zstd frame header")
    single_segment = (descriptor >> 5) & 1
    dict_size = (0, 1, 2, 4)[descriptor & 3]
    fcs_size = (single_segment, 2, 4, 8)[descriptor >> 6]
    return single_segment, dict_size, fcs_size, 5 + (0 if single_segment else 1) + dict_size + fcs_size


def header_length(data: bytes, *, where: str) -> int:
    """The length of the frame header that starts ``data`` (at least its first 5 bytes: magic, descriptor).

    ArchiveError (``where`` names the frame) if it is not a zstd frame or sets the reserved bit.
    """
    return _layout(data, where)[3]


def parse_frame_header(data: bytes, *, max_window: int, where: str) -> FrameHeader:
    """The one parser of zstd frame headers, for the streaming reader and the whole-frame decoder alike.

    ``data`` holds at least the whole header (``header_length``). Kits refuse, on top of what libzstd
    refuses: a dictionary id, the reserved bit, and a window over ``max_window``.
    """
    single_segment, dict_size, fcs_size, length = _layout(data, where)
    descriptor = data[4]
    start = 5 + (0 if single_segment else 1)
    if dict_size and any(data[start : start + dict_size]):
        raise ArchiveError(f"{where}: zstd frame needs a dictionary; kits never use one")
    content_size = -1
    if fcs_size:
        raw = data[start + dict_size : length]
        content_size = int.from_bytes(raw, "little") + (256 if fcs_size == 2 else 0)
    if single_segment:
        window = content_size
    else:
        exponent, mantissa = data[5] >> 3, data[5] & 7
        base = 1 << (10 + exponent)
        window = base + (base // 8) * mantissa
    if window > max_window:
        raise ArchiveError(f"{where}: zstd window of {window} bytes exceeds the cap of {max_window}")
    return FrameHeader(has_checksum=bool((descriptor >> 2) & 1), content_size=content_size, window=window)


class FrameReader:
    """Sequential reader of a concatenation of zstd and skippable frames."""

    def __init__(self, stream: BinaryIO, *, max_window: int, start: int = 0, read_chunk: int = _READ_CHUNK) -> None:
        self._stream = stream
        # Small reads when only a small frame is wanted (a member's header frame), big ones for streaming.
        self._read_chunk = read_chunk
        self._buffer = bytearray()
        self._position = 0  # offset in _buffer of the next unread byte
        self._consumed = start  # file offset of _buffer[0]
        self._eof = False
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
        self.max_window = max_window
        # When set (a hashlib object), every byte consumed from the file is fed to it.
        self.tap: Any = None
        # Start of the batch being gathered inside a frame: the buffer is never compacted past it.
        self._pin: int | None = None

    @property
    def offset(self) -> int:
        """File offset of the next unread byte."""
        return self._consumed + self._position

    def _fill(self, wanted: int) -> bool:
        while len(self._buffer) - self._position < wanted and not self._eof:
            cut = self._position if self._pin is None else self._pin
            if cut > _READ_CHUNK:
                del self._buffer[:cut]
                self._consumed += cut
                self._position -= cut
                if self._pin is not None:
                    self._pin -= cut
            chunk = self._stream.read(max(self._read_chunk, wanted))
            if not chunk:
                self._eof = True
            else:
                self._buffer += chunk
        return len(self._buffer) - self._position >= wanted

    def _take(self, size: int, what: str) -> bytes:
        if not self._fill(size):
            raise ArchiveError(f"archive truncated at offset {self.offset}: {what} needs {size} bytes")
        data = bytes(self._buffer[self._position : self._position + size])
        self._position += size
        if self.tap is not None:
            self.tap.update(data)
        return data

    def at_end(self) -> bool:
        return not self._fill(1)

    def peek_magic(self) -> int:
        """Magic number of the next frame; ArchiveError at a short read."""
        if not self._fill(4):
            raise ArchiveError(f"archive truncated at offset {self.offset}: expected a frame")
        return int(struct.unpack_from("<I", self._buffer, self._position)[0])

    def read_skippable(self, *, max_size: int) -> tuple[int, bytes]:
        magic, size = struct.unpack("<II", self._take(8, "skippable frame header"))
        if not SKIPPABLE_FIRST <= magic <= SKIPPABLE_LAST:
            raise ArchiveError(f"offset {self.offset - 8}: expected a skippable frame")
        if size > max_size:
            raise ArchiveError(
                f"offset {self.offset - 8}: skippable frame of {size} bytes exceeds the cap of {max_size}"
            )
        return magic, self._take(size, "skippable frame")

    def raw_sha256(self, start: int, end: int) -> str:
        """SHA-256 of the file's bytes in [start, end) (fewer at end of file), read from the stream directly.

        For reporting after a failure; the reader's position is lost afterwards.
        """
        digest = hashlib.sha256()
        self._stream.seek(start)
        left = max(0, end - start)
        while left:
            chunk = self._stream.read(min(left, _READ_CHUNK))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        self._buffer = bytearray()
        self._position = 0
        self._consumed = end
        self._eof = False
        return digest.hexdigest()

    def _skip_block(self, has_checksum: bool, what: str) -> tuple[bool, int]:
        """Step over the next block of the frame being read (and the checksum after the last one), in the buffer.

        Returns whether it was the last block and the most bytes it can decode to. ArchiveError for a reserved
        block type, a block over 128 KiB, or a file that ends inside the block.
        """
        if not self._fill(3):
            raise ArchiveError(f"archive truncated at offset {self.offset}: {what}: block header")
        buffer, position = self._buffer, self._position
        value = buffer[position] | (buffer[position + 1] << 8) | (buffer[position + 2] << 16)
        last = bool(value & 1)
        block_type = (value >> 1) & 3
        block_size = value >> 3
        if block_type == 3:
            raise ArchiveError(f"{what}: offset {self.offset}: reserved zstd block type")
        if block_size > MAX_BLOCK:
            raise ArchiveError(f"{what}: offset {self.offset}: zstd block larger than 128 KiB")
        need = 3 + (1 if block_type == 1 else block_size) + (4 if last and has_checksum else 0)
        if not self._fill(need):
            raise ArchiveError(f"archive truncated at offset {self.offset}: {what}: block needs {need} bytes")
        self._position += need
        return last, (block_size if block_type != 2 else MAX_BLOCK)

    def iter_zstd_frame(self, *, max_output: int, what: str) -> Iterator[bytes]:
        """Yield the decompressed content of the next zstd frame, batch by batch, never more than ``max_output`` bytes.

        Every block is decoded by libzstd, as ``zstd -d`` decodes it: the XXH64 checksum is verified
        when the frame has one, and a declared Frame_Content_Size must equal the output (checked by
        libzstd and again here). ArchiveError for anything ``zstd -t`` would not accept, and for what
        kits refuse on top of that (dictionaries, reserved bits, windows over the cap, output over the bound).
        """
        frame_start = self.offset
        where = f"{what}: offset {frame_start}"
        first = self._take(5, f"{what}: frame header")
        rest = self._take(header_length(first, where=where) - 5, f"{what}: frame header")
        header = parse_frame_header(first + rest, max_window=self.max_window, where=where)
        content_size, has_checksum = header.content_size, header.has_checksum
        if content_size > max_output:
            raise ArchiveError(f"{what}: zstd frame declares {content_size} bytes, more than the {max_output} allowed")
        # A frame that declares a small, non-zero size (already checked against the bound) is gathered whole
        # and decompressed in one call, which is markedly faster than the streaming object. Not a declared
        # size of 0: python-zstandard's one-shot call returns b"" for it without decoding a single block.
        # A frame whose compressed bytes outgrow one input batch falls back to streaming, so gathering
        # stays bounded in memory whatever the frame declares.
        one_shot = 0 < content_size <= _ONE_SHOT_MAX
        decompressor = self._decompressor.decompressobj()
        produced = 0
        prefix = first + rest
        batch_output = 0
        # Blocks are walked in place in the read buffer; only each batch is copied out, once.
        self._pin = self._position
        try:
            while True:
                last, block_output = self._skip_block(has_checksum, what)
                batch_output += block_output
                pin = self._pin
                assert pin is not None
                if not last and (self._position - pin >= _BATCH_INPUT or batch_output >= _BATCH_OUTPUT):
                    one_shot = False
                elif not last:
                    continue
                data = bytes(self._buffer[pin : self._position])
                self._pin = self._position
                if self.tap is not None:
                    self.tap.update(data)
                try:
                    if one_shot:
                        # The whole frame: libzstd decodes every block into exactly content_size bytes, or fails.
                        out = self._decompressor.decompress(prefix + data, allow_extra_data=False)
                    else:
                        if decompressor.eof:
                            raise ArchiveError(f"{what}: zstd frame at offset {frame_start} ends before its last block")
                        out = decompressor.decompress(prefix + data if prefix else data)
                except zstandard.ZstdError as exc:
                    raise ArchiveError(f"{what}: corrupt zstd data at offset {frame_start} ({exc})") from exc
                prefix = b""
                batch_output = 0
                produced += len(out)
                if produced > max_output:
                    raise ArchiveError(f"{what}: decompresses to more than the {max_output} bytes allowed")
                # Yielded even when empty, so a consumer regains control after every batch (a frame of blocks
                # that decode to nothing must not make a pulling reader buffer its compressed bytes unseen).
                yield out
                if last:
                    break
        finally:
            self._pin = None
        if not one_shot and (not decompressor.eof or decompressor.unused_data):
            raise ArchiveError(f"{what}: zstd frame at offset {frame_start} did not end cleanly")
        if content_size >= 0 and produced != content_size:
            raise ArchiveError(f"{what}: zstd frame declares {content_size} bytes but holds {produced}")


_local = threading.local()


def _thread_decompressor(max_window: int) -> Any:
    """This thread's decompressor (one may not be used by two threads at once)."""
    cached = getattr(_local, "decompressors", None)
    if cached is None:
        cached = _local.decompressors = {}
    decompressor = cached.get(max_window)
    if decompressor is None:
        decompressor = cached[max_window] = zstandard.ZstdDecompressor(max_window_size=max_window)
    return decompressor


def decode_whole(data: bytes, *, size: int, max_window: int, what: str) -> bytes:
    """Decode ``data``, which must be exactly one zstd frame declaring ``size`` content bytes, to those bytes.

    The frame header is checked under the rules ``FrameReader.iter_zstd_frame`` applies (magic, reserved bit,
    no dictionary, window cap) and must declare its content size (format 2 frames always do); libzstd then
    decodes every block, verifies the XXH64 checksum when present, and refuses trailing bytes: what
    ``zstd -t`` accepts, exactly one frame long. ArchiveError otherwise. Safe to call from worker threads.
    """
    if len(data) < 5:
        raise ArchiveError(f"{what}: not a zstd frame")
    if len(data) < header_length(data, where=what):
        raise ArchiveError(f"{what}: zstd frame header is truncated")
    header = parse_frame_header(data, max_window=max_window, where=what)
    if header.content_size < 0:
        raise ArchiveError(f"{what}: zstd frame does not declare its content size (format 2 frames do)")
    if header.content_size != size:
        raise ArchiveError(f"{what}: zstd frame declares {header.content_size} bytes, the index says {size}")
    try:
        out: bytes = _thread_decompressor(max_window).decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{what}: corrupt zstd data ({exc})") from exc
    if len(out) != size:
        raise ArchiveError(f"{what}: zstd frame declares {size} bytes but holds {len(out)}")
    return out
