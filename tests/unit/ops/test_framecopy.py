"""The frame copier on real files: both ways of copying give the same bytes, and every frame is checked."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitbuilder.errors import IntegrityError
from kitbuilder.ops.framecopy import PIECE, Span, copy_frames


def _spans(fd: int, data: bytes, cuts: list[int], name: str) -> list[Span]:
    spans = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        digest = hashlib.sha256(data[start:end]).hexdigest()
        spans.append(Span(fd, start, end - start, digest, f"{name} frame at {start}", name))
    return spans


@pytest.mark.parametrize("kernel_copy", [True, False])
@pytest.mark.parametrize("threads", [1, 3])
def test_copies_interleaved_sources_in_order(tmp_path: Path, kernel_copy: bool, threads: int) -> None:
    one = random.Random(1).randbytes(3 * PIECE + 123)
    two = random.Random(2).randbytes(PIECE // 2)
    (tmp_path / "one").write_bytes(one)
    (tmp_path / "two").write_bytes(two)
    fd_one = os.open(tmp_path / "one", os.O_RDONLY)
    fd_two = os.open(tmp_path / "two", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        first = _spans(fd_one, one, [0, 1000, PIECE + 7, 2 * PIECE], "one")  # back to back: one kernel copy
        middle = _spans(fd_two, two, [0, len(two)], "two")
        last = _spans(fd_one, one, [2 * PIECE, len(one)], "one")
        os.write(out, b"prefix")
        end = copy_frames([*first, *middle, *last], out, 6, out_name="out", threads=threads, kernel_copy=kernel_copy)
    finally:
        for fd in (fd_one, fd_two, out):
            os.close(fd)
    assert end == 6 + len(one) + len(two)
    assert (tmp_path / "out").read_bytes() == b"prefix" + one[: 2 * PIECE] + two + one[2 * PIECE :]


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_frame_whose_bytes_differ_from_its_digest_is_refused(tmp_path: Path, kernel_copy: bool) -> None:
    data = random.Random(3).randbytes(PIECE + 5)
    (tmp_path / "src").write_bytes(data)
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    spans = _spans(fd, data, [0, 100, len(data)], "src")
    spans[1] = Span(fd, 100, len(data) - 100, "0" * 64, "src frame 1", "src")
    try:
        with pytest.raises(IntegrityError, match="src frame 1: compressed frames differ from their signed digest"):
            copy_frames(spans, out, 0, out_name="out", threads=2, kernel_copy=kernel_copy)
    finally:
        os.close(fd)
        os.close(out)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_source_that_ends_inside_a_frame_is_refused(tmp_path: Path, kernel_copy: bool) -> None:
    data = random.Random(4).randbytes(4096)
    (tmp_path / "src").write_bytes(data[:3000])  # shorter than the frames say: changed after it was verified
    fd = os.open(tmp_path / "src", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with pytest.raises(IntegrityError, match="ends inside this frame"):
            copy_frames(_spans(fd, data, [0, 2000, 4096], "src"), out, 0, out_name="out", kernel_copy=kernel_copy)
    finally:
        os.close(fd)
        os.close(out)


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of our own: the kernel refuses copy_file_range from it into a file on another filesystem."""
    path = tmp_path / "other"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs; this test needs root (CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_source_the_kernel_cannot_copy_from_does_not_stop_the_others(tmp_path: Path, other_filesystem: Path) -> None:
    """kit patch with the base beside the output and the delta on another filesystem (a USB stick): the kernel
    copied the base's run, refused the delta's (EXDEV), and the copier then closed the descriptor through which
    the base run's frames were still being hashed: `cannot read (Bad file descriptor)`, exit 12, every time.
    Refusal is per source; the reading descriptor lives until every hash job has ended."""
    near = random.Random(5).randbytes(16 * PIECE)
    far = random.Random(6).randbytes(PIECE // 3)
    (tmp_path / "near").write_bytes(near)
    (other_filesystem / "far").write_bytes(far)
    assert os.stat(tmp_path / "near").st_dev != os.stat(other_filesystem / "far").st_dev
    fd_near = os.open(tmp_path / "near", os.O_RDONLY)
    fd_far = os.open(other_filesystem / "far", os.O_RDONLY)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Many frames in the first run and one hash worker: their hash jobs are still queued when the far
        # source is refused.
        cuts = list(range(0, 8 * PIECE, PIECE // 4)) + [8 * PIECE]
        first = _spans(fd_near, near, cuts, "near")
        middle = _spans(fd_far, far, [0, len(far)], "far")
        last = _spans(fd_near, near, [8 * PIECE, 12 * PIECE, len(near)], "near")
        end = copy_frames([*first, *middle, *last], out, 0, out_name="out", threads=1)
    finally:
        for fd in (fd_near, fd_far, out):
            os.close(fd)
    assert end == len(near) + len(far)
    assert (tmp_path / "out").read_bytes() == near[: 8 * PIECE] + far + near[8 * PIECE :]
