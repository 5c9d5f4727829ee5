"""kit build's reads of inputs changed between the scan and the read (held there by the fault hook, never by timing).

Each case: the documented exit code, one line naming the input and what to do, no traceback, nothing under the
final name and no temporary file left, nothing packed from outside the source tree.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories.cli import KitEnv

_COMMAND = [sys.executable, "-c", "from kitbuilder.cli import main; main()"]


def _held_build(kit_env: KitEnv, act: Callable[[], None], *extra: str, out: Path | None = None) -> tuple[int, str]:
    """``kit build`` held after its input scan while ``act`` changes the tree; (exit code, stderr)."""
    gate = kit_env.root / "gate"
    out = out or kit_env.kit()
    env = {**os.environ, "KIT_DEBUG": "", "KIT_FAULT_WAIT": f"build-inputs-collected:{gate}"}
    args = ["build", str(kit_env.spec), "--key", str(kit_env.ed_key), "--out", str(out), *extra]
    child = subprocess.Popen([*_COMMAND, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = Path(f"{gate}.waiting")
        while not waiting.exists() and child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.01)
        assert waiting.exists(), child.communicate()
        act()
        gate.touch()
        _, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, stderr.decode()


def _refused(kit_env: KitEnv, code: int, text: str, *names: str) -> None:
    assert code == 2, (code, text)
    assert text.count("\n") == 1 and "Traceback" not in text, text
    for name in names:
        assert name in text, text
    assert [p.name for p in kit_env.root.iterdir() if "kit.tar.zst" in p.name] == []


@pytest.mark.parametrize("threads", ["0", "1", "8"])
def test_a_small_input_changed_before_a_large_one_is_named_first(kit_env: KitEnv, threads: str) -> None:
    """The small input sits in the open group (read later, on a worker) when the large one after it fails to open:
    the small one is first in archive order, so it is the one named, whatever the thread count."""
    many = kit_env.root / "src/docs/many"
    many.mkdir()
    (many / "a.txt").write_bytes(b"a" * 100)
    (many / "b.bin").write_bytes(os.urandom(2 << 20))

    def act() -> None:
        (many / "a.txt").unlink()
        (many / "b.bin").unlink()

    code, text = _held_build(kit_env, act, "--threads", threads)
    _refused(kit_env, code, text, "a.txt: cannot read (No such file or directory)")


@pytest.mark.parametrize("size", [20, 2 << 20])
def test_a_parent_directory_swapped_for_a_link_out_of_the_tree_is_refused(
    kit_env: KitEnv, tmp_path: Path, size: int
) -> None:
    """Only the last component was opened without following links: a directory above it swapped for a link to a
    look-alike tree elsewhere (same names, same sizes) had the files outside the source tree packed."""
    sub = kit_env.root / "src/docs/sub"
    sub.mkdir()
    (sub / "x.txt").write_bytes(b"i" * size)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"S" * size)

    def act() -> None:
        sub.rename(sub.with_name("sub.old"))
        sub.symlink_to(outside, target_is_directory=True)

    code, text = _held_build(kit_env, act, "--threads", "2")
    _refused(kit_env, code, text, "x.txt", "is no longer the regular file it was when the build started")


@pytest.mark.parametrize("size", [20, 2 << 20])
def test_an_input_swapped_for_a_hard_link_to_a_file_outside_the_tree_is_refused(
    kit_env: KitEnv, tmp_path: Path, size: int
) -> None:
    target = kit_env.root / "src/docs/x.txt"
    target.write_bytes(b"i" * size)
    outside = tmp_path / "secret"
    outside.write_bytes(b"S" * size)

    def act() -> None:
        target.unlink()
        os.link(outside, target)

    code, text = _held_build(kit_env, act, "--threads", "2")
    _refused(kit_env, code, text, "x.txt", "is no longer the regular file it was when the build started")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "symlink"])
@pytest.mark.parametrize("threads", ["0", "8"])
def test_a_small_input_replaced_by_what_is_not_a_regular_file_is_refused(
    kit_env: KitEnv, tmp_path: Path, kind: str, threads: str
) -> None:
    target = kit_env.root / "src/docs/x.txt"
    target.write_bytes(b"i" * 20)

    def act() -> None:
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "directory":
            target.mkdir()
        elif kind == "device":
            os.mknod(target, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero's numbers
        else:
            target.symlink_to("/etc/hostname")

    code, text = _held_build(kit_env, act, "--threads", threads)
    _refused(kit_env, code, text, "x.txt", "is no longer the regular file it was when the build started")


def test_a_shipped_sbom_replaced_by_a_fifo_after_the_scan_is_refused_not_waited_on(kit_env: KitEnv) -> None:
    """The shipped SBOMs are read (to be checked) right after the scan: a FIFO there blocked the build forever."""
    spdx = Path(__file__).parents[2] / "examples/lnm-release/sbom/migration-runner.spdx.json"
    sbom = kit_env.root / "src/runner.spdx.json"
    sbom.write_bytes(spdx.read_bytes())
    kit_env.spec.write_text(
        kit_env.spec.read_text() + f"sboms:\n  - id: runner-sbom\n    source: {sbom}\n    subject: migration-runner\n"
    )

    def act() -> None:
        sbom.unlink()
        os.mkfifo(sbom)

    code, text = _held_build(kit_env, act)
    _refused(kit_env, code, text, "runner.spdx.json", "is no longer the regular file it was when the build started")
