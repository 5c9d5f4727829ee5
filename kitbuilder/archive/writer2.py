"""Format-2 kit writer: frames, not members, are the unit (docs/format.md §0.2).

API (what ``kit build``, ``kit patch`` and delta kits call, in this order):

1. payload, in archive order, any mix of
   - ``add_file(path, source, size)``: a file read from ``source`` (hashed and compressed here); small
     members join the open group frame, a large one becomes a header frame and CHUNK frames;
   - ``add_frame(data, size=, sha256=, members=)``: one already compressed frame appended **verbatim**
     (closing the open group first); ``sha256`` is the digest the caller trusts (a signed one): the bytes
     are hashed on a worker and IntegrityError is raised unless they match. ``members`` lists the members
     whose 512-byte header lies in the frame (``FrameMember(path, at, size, sha256)``; none for a chunk of
     a large member);
   - ``add_later(path, size, key, load)``: a small member ``load`` reads on the worker making its group frame;
   - ``add_frame_range(fd, offset, length=, size=, sha256=, members=)``: the same, read from ``fd`` at
     ``offset`` (``os.pread``, on a worker thread, so the bytes checked are the bytes written);
2. ``finish_payload()`` -> ``Payload(frames, members)``: every payload frame written, their table and the
   member entries (content digests included), for the signed manifest;
3. ``add_metadata(path, data)`` or ``add_metadata_stream(path, size, pieces)``: one metadata member, one frame,
   or (from LARGE bytes on) a header frame and CHUNK frames like a large payload member;
4. ``finish()`` -> the ``KitIndex``: end-of-archive frame, index frame, footer; the index is checked
   (``KitIndex.check_tiling``) before it is written, so a caller's misplaced verbatim frame fails here.

With ``reuse`` (a ``FrameReuse``), a group whose member list (path, size, sha256, in order) or a chunk
(member content sha256 and size, chunk number) the reuse source knows is taken from it verbatim instead
of being compressed: the output is the same bytes either way (same input, same level, one libzstd thread).
The offered frame is checked against its signed digest and decoded once, on the worker, and must decode
to exactly the bytes this build would compress there, else IntegrityError (``framejobs.reused``).

Every frame is made by a job on ``threads`` workers (``framejobs``: reading the group's deferred members,
hashing them, laying out and compressing its tar bytes, all off this thread); results are written in order and at most
``max_inflight`` bytes are in flight, so the output is identical for any thread count and memory stays
flat. A fault is reported in archive order: one met on the calling thread (an input that shrank) waits
for the frames before it (``settle``). Not thread-safe itself.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from kitbuilder import faults
from kitbuilder.archive import framejobs, layout, tarfmt, zstdframes
from kitbuilder.archive.framejobs import Done, FrameReuse, Load, Record, Verbatim, read_exact
from kitbuilder.archive.framejobs import compress_frame as compress_frame  # the one way frames are made
from kitbuilder.archive.framejobs import metadata_frames as metadata_frames
from kitbuilder.archive.framejobs import raw_frame as raw_frame
from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.archive.index import KitIndex, MemberEntry, MemberList
from kitbuilder.archive.pool import MAX_THREADS, OrderedPool, usable_cores
from kitbuilder.core.filelist import FileTable
from kitbuilder.core.manifest import FrameEntry
from kitbuilder.errors import UsageError

__all__ = [
    "FrameMember",
    "FrameReuse",
    "KitWriter2",
    "Payload",
    "Verbatim",
    "compress_frame",
    "metadata_frames",
    "raw_frame",
]

_READ = 1 << 20


@dataclass(frozen=True)
class FrameMember:
    """A member whose header lies in a frame appended verbatim: at byte ``at`` of its decompressed bytes."""

    path: str
    at: int
    size: int
    sha256: str


@dataclass(frozen=True)
class Payload:
    frames: tuple[FrameEntry, ...]
    members: Sequence[MemberEntry]  # made on access from ``table``
    table: FileTable  # the members' paths, places, sizes and digests (no roles: ``FileTable.with_kinds`` adds them)


class KitWriter2:
    """Writes a format-2 kit to ``out``; see the module docstring for the call order."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        level: int,
        threads: int = 0,
        digest_output: bool = False,
        output_hasher: HashWorker | None = None,
        reuse: FrameReuse | None = None,
        max_inflight: int | None = None,
        metadata_chunk: int = layout.CHUNK,
    ) -> None:
        self._out = out
        if metadata_chunk <= 0 or metadata_chunk % layout.BLOCK:
            raise ValueError("metadata_chunk must be a positive multiple of 512")
        # The data frame size of a large metadata member: CHUNK (docs/format.md §0.2); tests pass a smaller one
        # to make many-frame file lists of a few files (readers accept any split that tiles, §0.3 rule 3).
        self._metadata_chunk = metadata_chunk
        self._level = level
        self._reuse = reuse
        if not 0 <= threads <= MAX_THREADS:
            raise UsageError(f"--threads {threads}: use 0 (compress on one thread) to {MAX_THREADS}")
        # Memory in flight follows the threads that can run at once, not the count asked for: more threads than
        # cores compress nothing sooner, and a budget that grew with the count would hold the whole input.
        busy = min(threads, usable_cores())
        self._pool: OrderedPool[Done] = OrderedPool(
            threads, max_inflight=max_inflight or (busy + 1) * 3 * layout.GROUP_MAX
        )
        self._content_hasher = HashWorker()
        self._output_hasher = output_hasher
        self._own_output_hasher = False
        self._output_digest: Any = None
        if digest_output:
            if self._output_hasher is None:
                self._output_hasher = HashWorker()
                self._own_output_hasher = True
            self._output_digest = QueuedDigest(self._output_hasher, hashlib.sha256())
        self._trial = zstandard.ZstdCompressor(level=1, threads=0, write_checksum=False, write_content_size=False)
        self._offset = 0
        self._frames: list[FrameEntry] = []
        self._submitted = 0  # frames numbered so far (written or in flight)
        self._records: list[Record] = []
        self._group: list[tuple[Record, bytes | int]] = []  # an int: the key of a member ``_group_load`` reads
        self._group_size = 0
        self._group_load: Load | None = None
        self._large_digests: list[tuple[Record, QueuedDigest]] = []
        self._payload_frames: int | None = None
        # Payload members whose digest is known move from their records into this compact table (core/filelist.py)
        # as their frames are written, in order: a record and its digest string per file would hold three times as
        # much until the payload is done (a build of a million files).
        self._table = FileTable()
        self._payload_table: FileTable | None = None
        self._closed = False
        self._failed = False  # a fault was raised: the first in archive order, so ``settle`` raises no other

    # ----------------------------------------------------------------- plumbing

    @property
    def offset(self) -> int:
        """Bytes written so far (frames still in flight not counted)."""
        return self._offset

    def close(self) -> None:
        """Stop the workers (also after an error); ``finish`` calls it."""
        if not self._closed:
            self._closed = True
            self._pool.close()
            self._content_hasher.close()
            if self._own_output_hasher and self._output_hasher is not None:
                self._output_hasher.close()

    def __enter__(self) -> KitWriter2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)
        if self._output_digest is not None:
            self._output_digest.update(data)

    def _emit(self, done: Done) -> None:
        for record, sha256 in done.fill:
            record.sha256 = sha256
        if self._payload_frames is None and self._records and self._records[0].sha256 is not None:
            self._flush()
        self._frames.append(FrameEntry(self._offset, len(done.data), done.size, done.sha256))
        self._write(done.data)

    def _submit(self, job: Callable[[], Done], cost: int) -> int:
        """Queue one frame; its number."""
        number = self._submitted
        self._submitted += 1
        faults.point("build-frame")  # frames before it are in flight on the workers
        self._take(lambda: self._pool.submit(job, cost))
        return number

    def _drain(self) -> None:
        self._take(self._pool.drain)

    def _take(self, results: Callable[[], Iterable[Done]]) -> None:
        """Write the results, in order. The first to raise (a job's fault, a write error) fails the writer."""
        try:
            for done in results():
                self._emit(done)
        except BaseException:
            self._failed = True
            raise

    def _payload_open(self) -> None:
        if self._payload_frames is not None:
            raise ValueError("payload added after finish_payload()")

    # ----------------------------------------------------------------- payload

    def settle(self) -> None:
        """Raise the first fault before this point: in the frames in flight, then in the open group's deferred members
        (read here). A caller that meets a fault of its own (an input it cannot open) calls this first, so the first
        fault in archive order is the one reported; once the writer raised one, that one was first: nothing here."""
        if self._failed:
            return
        try:
            self._drain()
            self._load_group()
        except BaseException:
            self._failed = True
            raise

    def add_file(
        self, path: str, source: BinaryIO, size: int, *, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Add member ``path`` with ``size`` bytes read from ``source``; UsageError if the source changes size."""
        self._payload_open()
        try:
            if layout.is_large(size):
                self._close_group()
                self._add_large(path, source, size, on_bytes)
                return
            data = read_exact(source, size, path)
        except Exception:
            self.settle()  # an earlier frame or deferred member may hold the first fault in archive order
            raise
        if on_bytes is not None:
            on_bytes(size)
        self._group_add(path, size, data)

    def add_bytes(self, path: str, data: bytes) -> None:
        """A payload member from memory (the kit's SBOM); grouped like any file of its size."""
        self._payload_open()
        if layout.is_large(len(data)):
            self._close_group()
            self._add_large(path, io.BytesIO(data), len(data), None)
        else:
            self._group_add(path, len(data), data)

    def add_later(self, path: str, size: int, key: int, load: Load) -> None:
        """Add small member ``path`` of ``size`` bytes, read by ``load(key, path, size)`` on the worker making its
        group frame (here if ``entries`` needs its digest first); its faults are raised in archive order."""
        self._payload_open()
        if layout.is_large(size):
            raise ValueError(f"{path}: {size} bytes is a large member; add it with add_file")
        if self._group_load is not load:
            self._load_group()  # one loader per group job: another one's members are read now
        self._group_load = load
        self._group_add(path, size, key)

    def _load_group(self) -> None:
        """Read the open group's deferred members on this thread (after the frames in flight: fault order)."""
        if self._group_load is not None:
            self._drain()
            self._group[:] = framejobs.load_members(self._group, self._group_load)
            self._group_load = None

    def _group_add(self, path: str, size: int, data: bytes | int) -> None:
        record = Record(path, self._submitted, self._group_size, size, None)
        self._records.append(record)
        self._group.append((record, data))
        self._group_size += layout.member_bytes(size)
        if layout.closes_group(self._group_size, path):
            self._close_group()

    def _close_group(self) -> None:
        if not self._group:
            return
        group, size, load = self._group, self._group_size, self._group_load
        self._group, self._group_size, self._group_load = [], 0, None
        # A reused frame is decoded beside the bytes it replaces: one more copy in memory while its job runs.
        self._submit(framejobs.group_job(group, self._level, self._reuse, load), (3 if self._reuse else 2) * size)

    def _add_large(self, path: str, source: BinaryIO, size: int, on_bytes: Callable[[int], None] | None) -> None:
        record = Record(path, self._submitted, 0, size, None)
        self._records.append(record)
        header = tarfmt.build_header(path, size, 0)
        self._submit(framejobs.frame_job(header, self._level), 2 * layout.BLOCK)
        known = None
        if self._reuse is not None:
            # The reuse source is asked by content digest: hash the file first (it is read again below, and hashed
            # again: the digest recorded is the one of the bytes packed, should the file change in between).
            digest = hashlib.sha256()
            left = size
            while left:
                chunk = source.read(min(_READ, left))
                if not chunk:
                    raise UsageError(f"{path}: input shrank while being read (expected {size} bytes); rerun the build")
                digest.update(chunk)
                left -= len(chunk)
            known = digest.hexdigest()
            source.seek(0)
        queued = QueuedDigest(self._content_hasher, hashlib.sha256())
        padded = layout.padded(size)
        left = size
        number = 0
        store: bool | None = None
        while left:
            want = min(layout.CHUNK, left)
            data = read_exact(source, want, path, more=left > want)
            left -= want
            queued.update(data)
            if not left and padded > size:
                data += bytes(padded - size)
            if store is None:
                # Decided once per member from its start: < 3% saved at level 1 means raw-block frames throughout.
                sample = data[: layout.RAW_TRIAL]
                store = len(self._trial.compress(sample)) >= len(sample) * 0.97
            found = self._reuse.chunk(known, size, number) if self._reuse is not None and known else None
            what = f"{path} chunk {number}"
            self._submit(framejobs.chunk_job(found, data, self._level, store, what), (3 if found else 2) * len(data))
            number += 1
            if on_bytes is not None:
                on_bytes(want)
        if source.read(1):
            raise UsageError(f"{path}: input grew while being read (expected {size} bytes); rerun the build")
        queued.flush()
        self._large_digests.append((record, queued))

    def add_frame(self, data: bytes, *, size: int, sha256: str, members: Sequence[FrameMember] = ()) -> None:
        """Append one compressed frame verbatim; IntegrityError (when it is written) unless sha256(data) matches."""
        self._payload_open()
        self._close_group()
        number = self._place(members)
        what = f"frame of {members[0].path}" if members else f"frame {number}"
        self._submit(framejobs.verbatim_job(data, size, sha256, what), len(data) + size)

    def add_frame_range(
        self, fd: int, offset: int, *, length: int, size: int, sha256: str, members: Sequence[FrameMember] = ()
    ) -> None:
        """``add_frame`` with the bytes read from ``fd`` at ``offset`` (on a worker: read once, checked, written)."""
        self._payload_open()
        self._close_group()
        number = self._place(members)
        what = f"frame of {members[0].path}" if members else f"frame {number}"
        self._submit(framejobs.range_job(fd, offset, length, size, sha256, what), 2 * length)

    def _place(self, members: Sequence[FrameMember]) -> int:
        number = self._submitted
        for member in members:
            self._records.append(Record(member.path, number, member.at, member.size, member.sha256))
        return number

    def entries(self) -> Sequence[MemberEntry]:
        """The members added so far with their digests (waits for the frames in flight; the open group stays open).
        Made on access from the writer's records, as long as no member is added."""
        self._drain()
        self._load_group()
        self._sync_large()
        for record, data in framejobs.load_members(self._group, None):  # loaded above
            if record.sha256 is None:
                record.sha256 = hashlib.sha256(data).hexdigest()
        self._flush()
        return self._members()

    def table(self) -> FileTable:
        """The payload members added so far with their digests, as the writer's own table (``entries`` waits for the
        frames in flight): shared, not copied, so it grows with the next member added; read it before that."""
        self._payload_open()
        self.entries()
        if self._records:
            raise ValueError("a payload member's digest is not known yet")
        return self._table

    def _flush(self) -> None:
        """Move the leading payload records whose digest is known into the table (in order: the table is a prefix)."""
        records = self._records
        table = self._table
        moved = 0
        for r in records:
            if r.sha256 is None:
                break
            table.append(r.path, r.size, r.sha256, "", "", r.frame, r.at)
            moved += 1
        del records[:moved]

    def _sync_large(self) -> None:
        self._content_hasher.sync()
        for record, queued in self._large_digests:
            record.sha256 = queued.hexdigest()
        self._large_digests = []

    def finish_payload(self) -> Payload:
        """Close the payload: every payload frame written; their table and the member entries."""
        self._payload_open()
        self._close_group()
        self._drain()
        self._sync_large()
        self._payload_frames = len(self._frames)
        # The payload members as a compact table (the index and the manifest's files share its strings and columns).
        self._flush()
        assert not self._records
        table = self._payload_table = self._table
        return Payload(tuple(self._frames), MemberList.of_files(table, ()), table)

    def _members(self) -> MemberList:
        """The members written: before ``finish_payload`` made on access from the records, after it the payload table
        then the metadata members."""
        records = self._records

        def made(number: int) -> MemberEntry:
            r = records[number]
            assert r.sha256 is not None
            return MemberEntry(r.path, r.frame, r.at, r.size, r.sha256)

        if self._payload_table is None:
            table = self._table
            moved = len(table)
            listed = MemberList.of_files(table, ())

            def either(number: int) -> MemberEntry:
                return listed[number] if number < moved else made(number - moved)

            return MemberList(moved + len(records), either, ())
        return MemberList.of_files(self._payload_table, tuple(made(n) for n in range(len(records))))

    # ----------------------------------------------------------------- metadata and end

    def add_metadata(self, path: str, data: bytes) -> MemberEntry:
        """One metadata member (after ``finish_payload``); its entry. See ``add_metadata_stream``."""
        return self.add_metadata_stream(path, len(data), (data,))

    def add_metadata_stream(self, path: str, size: int, pieces: Iterable[bytes]) -> MemberEntry:
        """One metadata member of ``size`` bytes given in ``pieces`` (after ``finish_payload``); its entry.

        A member under LARGE is one frame (header, data, padding); a larger one (a file list or SHA256SUMS of many
        files) is laid out like a large payload member: its header frame, then its padded data in compressed
        frames of ``metadata_chunk`` bytes (CHUNK), so no frame, and no reader, ever holds all of it
        (docs/format.md §0.2). ValueError unless the pieces hold exactly ``size`` bytes (a caller's bug).
        """
        if self._payload_frames is None:
            raise ValueError("add_metadata() before finish_payload()")
        digest = hashlib.sha256()
        first = self._submitted

        def hashed() -> Iterator[bytes]:
            for piece in pieces:
                digest.update(piece)
                yield piece

        for raw in metadata_frames(path, size, hashed(), self._metadata_chunk):
            self._submit(framejobs.frame_job(raw, self._level), 2 * len(raw))
        sha256 = digest.hexdigest()
        self._records.append(Record(path, first, 0, size, sha256))
        return MemberEntry(path, first, 0, size, sha256)

    def finish(self) -> KitIndex:
        """Write the end-of-archive frame, the index frame and the footer; stop the workers."""
        try:
            if self._payload_frames is None:
                self.finish_payload()
            self._submit(framejobs.frame_job(tarfmt.END_OF_ARCHIVE, self._level), 2 * layout.END_SIZE)
            self._drain()
            index = KitIndex.v2(tuple(self._frames), self._members(), len(self._frames) - 1)
            index.check_tiling()
            index_offset = self._offset
            self._write(zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, index.to_bytes()))
            self._write(zstdframes.footer_frame(index_offset))
            if self._output_digest is not None:
                self._output_digest.flush()
            return index
        finally:
            self.close()

    def output_sha256(self) -> str:
        """SHA-256 of every byte written; after ``finish`` and only with ``digest_output``."""
        if self._output_digest is None or self._output_hasher is None:
            raise ValueError("KitWriter2 was created without digest_output")
        if not self._own_output_hasher:
            self._output_hasher.sync()
        return str(self._output_digest.hexdigest())
