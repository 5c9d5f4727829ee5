"""kit build's reads of small inputs: on the frame workers, by number, each fault raised at its own input.

The worker making a group frame reads its small inputs (``InputReader``); what it read must be what the input held
when read (one byte more when it grew, so the job refuses it), a fault must surface at that input, never earlier
(the inputs before it are written first) and never as another input's, and the bytes must be those of a kit built
from the same files read on the calling thread, for any thread count. Real files in tmp_path, real kits.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kitbuilder.archive import layout
from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core.spec import ComponentSpec
from kitbuilder.errors import UsageError
from kitbuilder.ops.build_inputs import InputList, files_under
from tests.factories.cli import KitEnv


def _inputs(root: Path, sizes: list[int]) -> InputList:
    component = ComponentSpec(role="docs", id="docs", source=root, dest="docs")
    out = InputList([(component, False)])
    for number, size in enumerate(sizes):
        path = root / f"f{number:03d}"
        path.write_bytes(bytes([number % 251]) * size)
        info = path.stat()
        out.append(f"docs/f{number:03d}", size, 0, (info.st_dev, info.st_ino))
        assert out[number].source == path  # made from the component's source and the kit path
    return out


def test_the_reader_reads_each_input_by_number_on_any_thread_and_after_the_list_is_cleared(tmp_path: Path) -> None:
    sizes = [0, 10, 5000, 700, 3]
    inputs = _inputs(tmp_path, sizes)
    expected = [item.source.read_bytes() for item in inputs]
    read = inputs.reader()
    paths = list(inputs.kit_paths)
    inputs.clear()  # the build frees its list while the last jobs still read
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda n: read(n, paths[n], sizes[n]), range(len(sizes))))
    assert got == expected


def test_an_input_that_grew_reads_one_byte_past_its_listed_size(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [10, 20])
    with inputs[1].source.open("ab") as grow:
        grow.write(b"more")
    read = inputs.reader()
    assert [len(read(n, inputs.kit_paths[n], inputs.size(n))) for n in range(2)] == [10, 21]


def test_a_missing_input_and_a_link_are_refused_naming_the_source(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [10, 20])
    inputs[0].source.unlink()
    link_target = tmp_path / "elsewhere"
    link_target.write_bytes(b"x" * 20)
    inputs[1].source.unlink()
    os.symlink(link_target, inputs[1].source)
    read = inputs.reader()
    with pytest.raises(UsageError, match=r"f000: cannot read \(No such file or directory\)"):
        read(0, inputs.kit_paths[0], 10)
    with pytest.raises(UsageError, match="f001: is no longer the regular file"):
        read(1, inputs.kit_paths[1], 20)


def _write(inputs: InputList, threads: int, later: bool) -> bytes:
    out = io.BytesIO()
    with KitWriter2(out, level=3, threads=threads) as writer:
        read = inputs.reader()
        for number, path in enumerate(inputs.kit_paths):
            size = inputs.size(number)
            if later:
                writer.add_later(path, size, number, read)
            else:
                writer.add_file(path, io.BytesIO(inputs[number].source.read_bytes()), size)
        writer.add_bytes("docs/zz-sbom.json", b"{}")  # joins the open group, as the kit's SBOM does
        writer.finish()
    return out.getvalue()


def test_members_read_on_the_workers_make_the_bytes_of_members_read_here_for_any_thread_count(
    tmp_path: Path,
) -> None:
    sizes = [(number * 7919) % 40_000 for number in range(300)]  # 6 MiB: several group frames
    inputs = _inputs(tmp_path, sizes)
    expected = _write(inputs, 0, later=False)
    for threads in (0, 1, 2, 5):
        assert hashlib.sha256(_write(inputs, threads, later=True)).digest() == hashlib.sha256(expected).digest()


@pytest.mark.parametrize("threads", [0, 2])
def test_the_first_fault_in_archive_order_is_raised_whichever_job_meets_it_first(tmp_path: Path, threads: int) -> None:
    sizes = [30_000] * 200  # about 6 MiB: the two faults lie in different group frames
    inputs = _inputs(tmp_path, sizes)
    inputs[20].source.unlink()
    with inputs[180].source.open("ab") as grow:
        grow.write(b"x")
    with pytest.raises(UsageError, match="f020: cannot read"):
        _write(inputs, threads, later=True)
    inputs = _inputs(tmp_path, sizes)  # the files written again, and scanned again
    os.truncate(inputs[20].source, 5)  # the same file, shorter
    with inputs[180].source.open("ab") as grow:
        grow.write(b"x")
    with pytest.raises(UsageError, match="docs/f020: input shrank while being read"):
        _write(inputs, threads, later=True)


def test_a_large_member_is_not_deferred(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [layout.LARGE])
    with KitWriter2(io.BytesIO(), level=3) as writer, pytest.raises(ValueError, match="large member"):
        writer.add_later("docs/f000", layout.LARGE, 0, inputs.reader())


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


@pytest.mark.parametrize("first", ["removed", "grown"])
def test_a_build_with_two_inputs_changed_after_the_scan_names_the_first_in_archive_order(
    kit_env: KitEnv, first: str
) -> None:
    """Two inputs in different group frames change between the scan and the reads (held there by the fault hook, not
    by timing); whichever worker meets its fault first, the build names the earlier input, in one line, and writes
    nothing."""
    many = kit_env.root / "src/docs/many"
    many.mkdir()
    for number in range(300):  # 9 MiB of small inputs: many group frames, made on several workers
        (many / f"f{number:03d}.txt").write_bytes(bytes([65 + number % 26]) * 30_000)
    early, late = many / "f010.txt", many / "f290.txt"
    removed, grown = (early, late) if first == "removed" else (late, early)
    gate = kit_env.root / "gate"
    out = kit_env.kit()
    env = {**os.environ, "KIT_DEBUG": "", "KIT_FAULT_WAIT": f"build-inputs-collected:{gate}"}
    command = [sys.executable, "-c", "from kitbuilder.cli import main; main()"]
    args = ["build", str(kit_env.spec), "--key", str(kit_env.ed_key), "--out", str(out), "--threads", "4"]
    child = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = Path(f"{gate}.waiting")
        while not waiting.exists() and child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.01)
        assert waiting.exists(), child.communicate()
        removed.unlink()
        with grown.open("ab") as grow:
            grow.write(b"appended after the scan\n")
        gate.touch()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    text = stderr.decode()
    assert child.returncode == 2, (child.returncode, text)
    assert text.count("\n") == 1 and "Traceback" not in text, text
    if first == "removed":
        assert "f010.txt: cannot read (No such file or directory)" in text, text
    else:
        assert "f010.txt: input grew while being read" in text, text
    assert not out.exists()
    assert [p.name for p in kit_env.root.iterdir() if out.name in p.name] == []  # no temporary file either


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


@pytest.mark.parametrize("threads", [0, 1, 4])
def test_a_fault_met_while_adding_a_file_never_replaces_the_first_one_in_archive_order(
    tmp_path: Path, threads: int
) -> None:
    """The first and the last of the deferred inputs are gone, in different group frames, all in flight; adding a
    large member then takes the first group's result to stay within budget, which raises. The first input is named:
    the writer's own clean-up (waiting for the frames in flight) raised the last group's fault in its place."""
    sizes = [300_000] * 40  # 12 MiB of small inputs: several group frames
    inputs = _inputs(tmp_path, sizes)
    inputs[0].source.unlink()
    inputs[39].source.unlink()
    groups, size = [], 0  # the writer's group sizes, as it closes them
    for path in inputs.kit_paths:
        size += layout.member_bytes(300_000)
        if layout.closes_group(size, path):
            groups, size = [*groups, size], 0
    groups += [size] if size else []
    assert len(groups) > 2
    budget = 2 * sum(groups) + 1023  # every group in flight; the large member's header frame (1,024) is over
    with KitWriter2(io.BytesIO(), level=1, threads=threads, max_inflight=budget) as writer:
        read = inputs.reader()
        for number, path in enumerate(inputs.kit_paths):
            writer.add_later(path, inputs.size(number), number, read)
        with pytest.raises(UsageError, match=r"f000: cannot read") as raised:
            writer.add_file("docs/zz-large", io.BytesIO(b"x" * layout.LARGE), layout.LARGE)
    assert "f039" not in str(raised.value)
