"""The frame work that runs on worker threads: the scan's in-order digest of a large member, a reused frame's check.

The scan decodes a large member's chunk frames on any worker and feeds its content digest from there, in chunk
order; the writer takes a frame a reuse source offers only if it decodes to the bytes it would have written.
Real kits from the real writer; corruption by flipping bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest

from kitbuilder.archive import framejobs, reader, scan2, tarfmt
from kitbuilder.archive.framejobs import Record, Verbatim
from kitbuilder.core.manifest import FileEntry, FrameEntry
from kitbuilder.errors import ArchiveError, IntegrityError
from kitbuilder.ops import kitfile
from tests.factories.hostile import pseudo_random
from tests.factories.hostile2 import crafted2

MiB = 1 << 20
# A group frame, then a 21 MiB member: its header frame and six chunk frames (five of 4 MiB, one of 1 MiB).
FILES = [("docs/a.md", b"# notes\n" * 40), ("docs/big.bin", pseudo_random(21 * MiB))]


def _scan(data: bytes, threads: int) -> scan2.Scanned:
    location = kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location  # payload placed by the file list
    return scan2.scan(
        io.BytesIO(data),
        location.index,
        location.index_offset,
        max_window=reader.Caps().max_window,
        threads=threads,
    )


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_large_member_is_checked_whole_whatever_worker_decodes_each_chunk(threads: int) -> None:
    data = crafted2(FILES).data
    scanned = _scan(data, threads)
    location = kitfile.read_metadata(io.BytesIO(data), reader.Caps()).location  # payload placed by the file list
    assert scanned.members == len(location.index.members)  # the two files and the kit's metadata members
    assert scanned.payload_bytes == sum(member.size for member in location.index.members)


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_large_member_whose_content_is_not_the_signed_one_is_refused(threads: int) -> None:
    def wrong_digest(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        files[1] = dataclasses.replace(files[1], sha256=hashlib.sha256(b"other").hexdigest())

    with pytest.raises(IntegrityError, match="member docs/big.bin: sha256 differs from the signed one"):
        _scan(crafted2(FILES, signed_hook=wrong_digest).data, threads)


@pytest.mark.parametrize("threads", [0, 1, 2, 8])
def test_a_bad_middle_chunk_is_the_fault_reported_and_later_chunks_do_not_wait_for_it_forever(threads: int) -> None:
    """Frame 4 (the third chunk) is damaged: its job fails before feeding the digest, yet passes its turn, so the
    chunks after it finish, and the fault reported is frame 4's, the first in file order."""

    def damage(out: bytearray, index: dict[str, object]) -> None:
        frames = index["frames"]
        assert isinstance(frames, list)
        frame = frames[4]
        out[frame["offset"] + frame["length"] // 2] ^= 0xFF

    with pytest.raises((ArchiveError, IntegrityError), match="frame 4 "):
        _scan(crafted2(FILES, raw_hook=damage).data, threads)


def _group(members: list[tuple[str, bytes]]) -> tuple[list[tuple[Record, bytes]], bytes]:
    records = [(Record(path, 0, 0, len(data), None), data) for path, data in members]
    return records, framejobs.group_raw(records)


class _Offers:
    """A reuse source offering one frame for any group (what a base kit's signed map would name)."""

    def __init__(self, frame: bytes, words: str) -> None:
        self.offer = Verbatim(frame, hashlib.sha256(frame).hexdigest(), words)
        self.asked: list[tuple[tuple[str, int, str], ...]] = []

    def group(self, members: tuple[tuple[str, int, str], ...]) -> Verbatim | None:
        self.asked.append(members)
        return self.offer

    def chunk(self, sha256: str, size: int, number: int) -> Verbatim | None:
        return None


def test_a_reused_group_frame_is_taken_verbatim_when_it_holds_exactly_these_members() -> None:
    members, raw = _group([("docs/a.md", b"alpha\n"), ("docs/b.md", b"beta\n" * 300)])
    frame = framejobs.compress_frame(raw, 3)
    source = _Offers(frame, "unused")
    expected = tuple((r.path, r.size, hashlib.sha256(d).hexdigest()) for r, d in members)
    done = framejobs.group_job(members, 3, source)()
    assert done.data == frame and done.size == len(raw)
    assert source.asked == [expected]
    assert [(record.path, record.size, digest) for record, digest in done.fill] == list(expected)


def test_a_reused_group_frame_holding_other_bytes_is_refused_with_the_sources_words() -> None:
    """The source's map names these members, but its frame holds an older a.md: copying it would sign bytes that
    are not the files'. Refused, never silently recompressed or copied."""
    members, _ = _group([("docs/a.md", b"alpha\n"), ("docs/b.md", b"beta\n" * 300)])
    _, old = _group([("docs/a.md", b"alphA\n"), ("docs/b.md", b"beta\n" * 300)])
    source = _Offers(framejobs.compress_frame(old, 3), "base.kit: frame 0 does not hold what it lists")
    with pytest.raises(IntegrityError, match="base.kit: frame 0 does not hold what it lists"):
        framejobs.group_job(members, 3, source)()


def test_a_reused_frame_whose_bytes_are_not_the_signed_ones_is_refused() -> None:
    raw = tarfmt.build_header("docs/a.md", 6, 0) + b"alpha\n" + bytes(506)
    frame = framejobs.compress_frame(raw, 3)
    offered = Verbatim(frame, hashlib.sha256(b"another frame").hexdigest(), "unused")
    with pytest.raises(IntegrityError, match="compressed bytes differ from their signed digest"):
        framejobs.reused(offered, raw, "group frame of docs/a.md")


def test_a_chunk_waiting_for_one_that_will_never_run_is_released_when_the_scan_stops() -> None:
    """A scan that stops (a fault, a signal) cancels the chunk jobs not yet started; one already waiting for its
    turn behind a cancelled one (the pieces that may wait for their turn are all taken) is released by ``abandon``
    instead of holding the pool's shutdown forever."""
    import threading

    chain = scan2._Chain()
    for step in range(1, 1 + chain.SLACK):
        chain.feed(step, b"left")  # chunk 0 has not come: these wait here, their jobs go on
    returned: list[bool] = []

    def later_chunk() -> None:
        chain.feed(1 + chain.SLACK, b"later")
        returned.append(True)

    waiter = threading.Thread(target=later_chunk)
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive()  # no room left: waiting for chunk 0, which never comes
    chain.abandon()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and returned == [True]
    assert chain.digest.hexdigest() == hashlib.sha256().hexdigest()  # nothing fed out of turn


def test_pieces_left_out_of_turn_are_fed_in_order_by_the_job_whose_turn_comes() -> None:
    """No job waits for its turn while there is room: later pieces are left, and the job holding the turn feeds
    them after its own, in order; a failed chunk (None) passes its turn without feeding."""
    pieces = [b"zero ", b"one ", None, b"three"]
    chain = scan2._Chain()
    for step in (3, 2):
        chain.feed(step, pieces[step])  # returns at once: chunk 0 is not there yet
    assert chain.digest.hexdigest() == hashlib.sha256().hexdigest()
    chain.feed(0, pieces[0])  # feeds 0, finds no 1: stops
    chain.feed(1, pieces[1])  # its turn: feeds 1, then 2 (nothing) and 3, left earlier
    assert chain.digest.hexdigest() == hashlib.sha256(b"zero one three").hexdigest()
