"""A kit file changed on disk while verify reads it: the digest verify reports must be of the bytes it checked.

verify reads the index and footer first, then the frames, then hashes the tail again for the whole file's
SHA-256. A file that grows or shrinks, or whose index or footer is rewritten in place, between those reads is not
the kit that was checked: verify must refuse it (one line, exit 5) instead of exiting 0 with a digest of bytes it
never checked, or checked bytes it no longer has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.ops.kitfile import read_metadata
from tests.factories.apply_runs import wait_for
from tests.factories.hostile import RELEASE, kit
from tests.factories.hostile2 import crafted2
from tests.factories.keys import write_pair


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def _index_offset(kit: Path) -> int:
    with kit.open("rb") as stream:
        return read_metadata(stream, Caps()).location.index_offset


def _grow(kit: Path) -> None:
    with kit.open("ab") as sink:
        sink.write(b"appended while verify was reading")


def _cut_tail(kit: Path) -> None:
    os.truncate(kit, _index_offset(kit))  # index and footer gone, every frame still there


def _cut_footer(kit: Path) -> None:
    os.truncate(kit, kit.stat().st_size - 1)


def _rewrite(kit: Path, offset: int) -> None:
    """One byte at ``offset`` replaced, in place: the file keeps its size."""
    with kit.open("r+b") as sink:
        sink.seek(offset)
        old = sink.read(1)
        sink.seek(offset)
        sink.write(b" " if old != b" " else b"\t")


def _rewrite_index(kit: Path) -> None:
    _rewrite(kit, _index_offset(kit) + 9)  # inside the index's JSON, already parsed


def _rewrite_footer(kit: Path) -> None:
    _rewrite(kit, kit.stat().st_size - 1)


def _held_verify(
    kit: Path, trusted: Path, tmp_path: Path, change: Callable[[Path], None], point: str
) -> tuple[int, str]:
    hold = tmp_path / "hold"
    child = subprocess.Popen(
        [sys.executable, "-c", "from kitbuilder.cli import main; main()", "verify", str(kit), "--key", str(trusted)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KIT_FAULT_WAIT": f"{point}:1:{hold}"},
    )
    try:
        wait_for(Path(f"{hold}.waiting"), child)
        change(kit)
        hold.touch()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, stderr


@pytest.mark.parametrize(
    ("make", "point"),
    [(lambda: crafted2().data, "scan-frame"), (lambda: crafted2().data, "verify-scan"), (kit, "verify-scan")],
    ids=["format2-mid-scan", "format2", "format1"],
)
@pytest.mark.parametrize(
    "change",
    [_grow, _cut_tail, _cut_footer, _rewrite_index, _rewrite_footer],
    ids=["grows", "tail-cut", "footer-cut", "index-rewritten", "footer-rewritten"],
)
def test_a_kit_changed_after_its_index_was_read_is_refused(
    change: Callable[[Path], None], make: Callable[[], bytes], point: str, tmp_path: Path, trusted: Path
) -> None:
    path = tmp_path / "k.kit.tar.zst"
    path.write_bytes(make())
    code, stderr = _held_verify(path, trusted, tmp_path, change, point)
    assert code == 5, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert "changed while" in stderr and "k.kit.tar.zst" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold", "hold.waiting", "k.kit.tar.zst"]
