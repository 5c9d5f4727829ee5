"""Streaming kit writer: one zstd frame per tar member, then the index and footer.

Each input byte is read once: it is hashed and fed to the compressor in the
same pass, so the SHA-256 in the manifest is of exactly the bytes written.
Memory stays at the compressor's window plus one read chunk.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.archive.index import IndexEntry, KitIndex
from kitbuilder.errors import UsageError

CHUNK = 1 << 20
# Data frames at least this large use the multithreaded compressor (when threads != 0).
MULTITHREAD_MIN = 1 << 20


# Data frames at least this large are checked for compressibility (a raw frame needs no compressor).
RAW_TRIAL_MIN = 1 << 20


class _Encoder:
    def start(self) -> bytes:
        return b""

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""


class _ZstdEncoder(_Encoder):
    def __init__(self, compressor: Any) -> None:
        self._compressor = compressor

    def feed(self, data: bytes) -> list[bytes]:
        return [self._compressor.compress(data)]

    def finish(self) -> bytes:
        return bytes(self._compressor.flush())


class _RawEncoder(_Encoder):
    def __init__(self, size: int) -> None:
        self._frame = zstdframes.RawFrameWriter(size)

    def start(self) -> bytes:
        return self._frame.header

    def feed(self, data: bytes) -> list[bytes]:
        return self._frame.blocks(data)


class KitWriter:
    """Appends members to ``out``; ``finish`` seals the archive. Not thread-safe."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        level: int,
        threads: int,
        mtime: int,
        hasher: HashWorker | None = None,
        digest_output: bool = False,
        output_hasher: HashWorker | None = None,
    ) -> None:
        """With ``hasher``, each data frame's digest runs on that worker thread, beside compression on
        this one; with ``digest_output``, so does the whole output's, on ``output_hasher`` if given."""
        self._out = out
        self._mtime = mtime
        self._hasher = hasher
        self._output_hasher = output_hasher or hasher
        self._output_digest: Any = None
        if digest_output:
            self._output_digest = self._new_digest(self._output_hasher)
        self._compressor = zstandard.ZstdCompressor(
            level=level, threads=threads, write_checksum=True, write_content_size=True
        )
        # Header frames and small data frames are single-threaded: a worker pool per tiny frame costs
        # more than it saves. The rule depends only on the size, so output stays reproducible.
        self._small_compressor = zstandard.ZstdCompressor(
            level=level, threads=0, write_checksum=True, write_content_size=True
        )
        # Level 1 suffices to tell whether data compresses at all.
        self._trial = zstandard.ZstdCompressor(level=1, threads=0, write_checksum=False, write_content_size=False)
        self._offset = 0
        self._members: list[IndexEntry] = []
        self._frames_digest: Any = None

    @property
    def offset(self) -> int:
        return self._offset

    @staticmethod
    def _new_digest(worker: HashWorker | None) -> Any:
        return QueuedDigest(worker, hashlib.sha256()) if worker is not None else hashlib.sha256()

    @staticmethod
    def _resolve(digest: Any, worker: HashWorker | None) -> str:
        if worker is not None:
            digest.flush()
            worker.sync()
        return str(digest.hexdigest())

    def output_sha256(self) -> str:
        """SHA-256 of every byte written; only after ``finish`` and with ``digest_output``."""
        if self._output_digest is None:
            raise ValueError("KitWriter was created without digest_output")
        return self._resolve(self._output_digest, self._output_hasher)

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._offset += len(data)
            if self._frames_digest is not None:
                self._frames_digest.update(data)
            if self._output_digest is not None:
                self._output_digest.update(data)

    def add_stream(
        self, path: str, source: BinaryIO, size: int, *, on_bytes: Callable[[int], None] | None = None
    ) -> IndexEntry:
        """Compress ``size`` bytes from ``source`` as member ``path``; UsageError if the source changes size.

        A member is two frames: its 512-byte header, then its data and padding. Keeping the
        data frame apart from the header (which holds the mtime) lets a later kit reuse the
        data frame byte for byte when only the build time changed.
        """
        start = self._offset
        self._write_header_frame(path, size)
        self._frames_digest = self._new_digest(self._hasher)
        digest = hashlib.sha256()
        padded = tarfmt.padded_size(size)
        remaining = size
        first = source.read(min(CHUNK, remaining)) if remaining else b""
        encoder: _Encoder
        if padded >= RAW_TRIAL_MIN and self._incompressible(first):
            encoder = _RawEncoder(padded)
        else:
            chosen = self._compressor if padded >= MULTITHREAD_MIN else self._small_compressor
            encoder = _ZstdEncoder(chosen.compressobj(size=padded))
        self._write(encoder.start())
        chunk = first
        while remaining:
            if not chunk:
                raise UsageError(f"{path}: input shrank while being read (expected {size} bytes); rerun the build")
            digest.update(chunk)
            remaining -= len(chunk)
            for piece in encoder.feed(chunk):
                self._write(piece)
            if on_bytes is not None:
                on_bytes(len(chunk))
            chunk = source.read(min(CHUNK, remaining)) if remaining else b""
        if source.read(1):
            raise UsageError(f"{path}: input grew while being read (expected {size} bytes); rerun the build")
        for piece in encoder.feed(bytes(padded - size)):
            self._write(piece)
        self._write(encoder.finish())
        return self._close_member(path, start, size, digest.hexdigest())

    def _incompressible(self, sample: bytes) -> bool:
        """Whether zstd would gain under 3% on this first chunk (compressed layers, media, random data).

        Such data is stored in raw blocks instead: the same bytes decode, at no compressor CPU.
        The rule depends only on the content, so rebuilds stay byte-identical.
        """
        return len(self._trial.compress(sample)) >= len(sample) * 0.97

    def _close_member(
        self, path: str, start: int, size: int, sha256: str, frame_sha256: str | None = None
    ) -> IndexEntry:
        digest = frame_sha256 if frame_sha256 is not None else self._resolve(self._frames_digest, self._hasher)
        entry = IndexEntry(path, start, self._offset - start, size, sha256, digest)
        self._frames_digest = None
        self._members.append(entry)
        return entry

    def _write_header_frame(self, path: str, size: int) -> None:
        compressor = self._small_compressor.compressobj(size=tarfmt.BLOCK)
        self._write(compressor.compress(tarfmt.build_header(path, size, self._mtime)) + compressor.flush())

    def add_data_frame(
        self, path: str, size: int, sha256: str, data_frame: BinaryIO, frame_length: int, frame_sha256: Any
    ) -> IndexEntry:
        """Add member ``path`` reusing an already compressed data frame, copied verbatim (no recompression).

        ``frame_sha256`` is the digest the source reader computes over exactly the bytes
        copied, so each byte is hashed once; the caller compares it with the signed one.
        """
        start = self._offset
        self._write_header_frame(path, size)
        remaining = frame_length
        while remaining:
            chunk = data_frame.read(min(CHUNK, remaining))
            if not chunk:
                raise UsageError(f"{path}: source kit ended inside the frame being copied")
            remaining -= len(chunk)
            self._write(chunk)
        return self._close_member(path, start, size, sha256, frame_sha256.hexdigest())

    def add_bytes(self, path: str, data: bytes) -> IndexEntry:
        return self.add_stream(path, io.BytesIO(data), len(data))

    def finish(self) -> KitIndex:
        """Write the end-of-archive frame, the index frame and the footer."""
        end_offset = self._offset
        compressor = self._compressor.compressobj(size=len(tarfmt.END_OF_ARCHIVE))
        self._write(compressor.compress(tarfmt.END_OF_ARCHIVE) + compressor.flush())
        index = KitIndex(
            format_version=1, members=tuple(self._members), end_offset=end_offset, end_length=self._offset - end_offset
        )
        index_offset = self._offset
        self._write(zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, index.to_bytes()))
        self._write(zstdframes.footer_frame(index_offset))
        return index
