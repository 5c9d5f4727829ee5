"""kit build's read-ahead of small inputs: in order, each read once, its fault raised at its own place.

The reader thread reads small inputs ahead of the writer; what it read must be what the input held when read
(one byte more when it grew, so the writer refuses it), and a fault must surface at that input, never earlier
(the inputs before it are written first) and never as another input's. Real files in tmp_path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kitbuilder.archive import layout
from kitbuilder.core.spec import ComponentSpec
from kitbuilder.errors import UsageError
from kitbuilder.ops.build_inputs import InputFile, ReadAhead, files_under
from tests.factories.cli import KitEnv


def _inputs(root: Path, sizes: list[int]) -> list[InputFile]:
    component = ComponentSpec(role="docs", id="docs", source=root, dest="docs")
    out = []
    for number, size in enumerate(sizes):
        path = root / f"f{number:03d}"
        path.write_bytes(bytes([number % 251]) * size)
        item = InputFile(kit_path=f"docs/f{number:03d}", size=size, component=component)
        assert item.source == path  # made from the component's source and the kit path
        out.append(item)
    return out


def test_small_inputs_come_in_order_read_whole_and_a_large_one_is_left_to_the_caller(tmp_path: Path) -> None:
    sizes = [0, 10, 5000, layout.LARGE, 700, 3]
    inputs = _inputs(tmp_path, sizes)
    with ReadAhead(inputs, max_bytes=6000, max_files=2) as reads:
        got = [(item.kit_path, None if read is None else read()) for item, read in reads]
    assert [path for path, _ in got] == [i.kit_path for i in inputs]
    for (_, data), item in zip(got, inputs, strict=True):
        if layout.is_large(item.size):
            assert data is None
        else:
            assert data == item.source.read_bytes()


def test_an_input_that_grew_reads_one_byte_past_its_listed_size(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [10, 20])
    with inputs[1].source.open("ab") as grow:
        grow.write(b"more")
    with ReadAhead(inputs) as reads:
        assert [len(read()) for _, read in reads if read is not None] == [10, 21]


def test_a_fault_is_raised_at_its_own_input_after_the_ones_before_it(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [10, 20, 30, 40])
    inputs[2].source.unlink()
    link_target = tmp_path / "elsewhere"
    link_target.write_bytes(b"x" * 40)
    inputs[3].source.unlink()
    os.symlink(link_target, inputs[3].source)
    seen: list[str] = []
    with ReadAhead(inputs) as reads, pytest.raises(FileNotFoundError):
        for item, read in reads:
            assert read is not None
            read()
            seen.append(item.kit_path)
    assert seen == ["docs/f000", "docs/f001"]
    with ReadAhead(inputs[3:]) as reads:
        for _, read in reads:
            assert read is not None
            with pytest.raises(UsageError, match="f003: is no longer the regular file"):
                read()


def test_a_build_whose_small_input_grows_after_the_scan_is_refused_naming_it(kit_env: KitEnv) -> None:
    """Held between the input scan and the reads by the fault hook (not by timing); the file then grows."""
    target = kit_env.root / "src/docs/RUNBOOK.md"
    gate = kit_env.root / "gate"
    out = kit_env.kit()
    env = {**os.environ, "KIT_DEBUG": "", "KIT_FAULT_WAIT": f"build-inputs-collected:{gate}"}
    command = [sys.executable, "-c", "from kitbuilder.cli import main; main()"]
    args = ["build", str(kit_env.spec), "--key", str(kit_env.ed_key), "--out", str(out)]
    child = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = Path(f"{gate}.waiting")
        while not waiting.exists() and child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.01)
        assert waiting.exists(), child.communicate()
        with target.open("ab") as grow:
            grow.write(b"appended after the scan\n")
        gate.touch()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    text = stderr.decode()
    assert child.returncode == 2, (child.returncode, text)
    assert text.count("\n") == 1 and "RUNBOOK.md" in text and "grew while being read" in text, text
    assert not out.exists()


def test_the_listing_of_a_source_tree_is_what_rglob_and_is_file_find(tmp_path: Path) -> None:
    """files_under replaced ``rglob("*")`` + ``is_file()`` (a Path and a stat per entry) in the spec's source
    listing: links to files count, links to directories are not entered, FIFOs and broken links are not files."""
    top = tmp_path / "src"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f.sql").write_text("x")
    (top / ".hidden").write_text("y")
    (top / "d" / "sub").mkdir(parents=True)
    (top / "d" / "sub" / "g").write_text("z")
    os.symlink(top / "a" / "b" / "f.sql", top / "to-file")
    os.symlink(top / "a", top / "to-dir")
    os.symlink(top / "nowhere", top / "broken")
    os.mkfifo(top / "fifo")
    expected = frozenset(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())
    assert files_under(top) == expected == {".hidden", "a/b/f.sql", "d/sub/g", "to-file"}
