"""A delta build's base changed on disk while the build holds it open, or damaged from the start.

The base is verified when the build begins and read again through that same descriptor: its frames while the new
kit is built (reused, or a patch's base content) and its file list after it (the plan). Each read that does not
hold what was verified fails [4] with one line naming the base and why (written meanwhile, or damaged), nothing
under --out and no scratch directory left. A base replaced by a rename is not changed: the build reads the file it
verified. The holds are named fault points (KIT_FAULT_WAIT), real kits and signatures in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.apply_runs import wait_for
from tests.factories.cli import KitEnv

EPOCH = "1767225600"


def _kit(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    clean["SOURCE_DATE_EPOCH"] = EPOCH
    return subprocess.Popen(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)],
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    with _kit(*args, env=env) as child:
        out, err = child.communicate()
    return subprocess.CompletedProcess([], child.returncode, out, err)


class Release:
    def __init__(self, kit_env: KitEnv) -> None:
        docs = kit_env.root / "src/docs"
        # Several group frames, so a delta build reuses some and patches others against the base.
        for number in range(200):
            (docs / f"f{number:03d}.txt").write_bytes((f"file {number}\n".encode() * 5000)[:40000])
        self.env = kit_env
        self.base = kit_env.root / "base.kit.tar.zst"
        assert _run("build", kit_env.spec, "--key", kit_env.ed_key, "--out", self.base).returncode == 0
        (docs / "f005.txt").write_text("changed\n" * 200)
        (docs / "f150.txt").write_bytes((docs / "f150.txt").read_bytes() + b"one more line\n")
        kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
        self.other = kit_env.root / "other.kit.tar.zst"  # another kit the same key signed
        assert _run("build", kit_env.spec, "--key", kit_env.ed_key, "--out", self.other).returncode == 0
        self.out = kit_env.root / "delta.kit.tar.zst"

    def command(self, mode: str) -> list[object]:
        key = self.env.ed_key
        return [
            "build",
            self.env.spec,
            "--key",
            key,
            "--delta-from",
            self.base,
            "--out",
            self.out,
            "--delta-frames",
            mode,
        ]

    def held(self, mode: str, point: str, act: Callable[[], object]) -> subprocess.CompletedProcess[str]:
        """The delta build, held at fault point ``point`` while ``act`` changes the base, then let go."""
        gate = self.env.root / "gate"
        with _kit(*self.command(mode), env={"KIT_FAULT_WAIT": f"{point}:{gate}"}) as child:
            try:
                wait_for(Path(f"{gate}.waiting"), child)
                act()
            finally:
                gate.touch()
            out, err = child.communicate()
        return subprocess.CompletedProcess([], child.returncode, out, err)

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.env.root.iterdir() if p.name.startswith(".") or "delta" in p.name)


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return Release(kit_env)


def _frames(kit: Path) -> tuple[int, int]:
    """(offset of the kit's file list's last frame, its length)."""
    with open_kit(kit) as stream:
        listed = read_metadata(stream, Caps()).location.index.locate(FILE_LIST).frames[-1]
        return listed.offset, listed.length


def _flip(kit: Path, offset: int) -> None:
    with kit.open("r+b") as handle:  # in place: the build holds this very file open
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def _append(kit: Path, data: bytes) -> None:
    with kit.open("ab") as handle:
        handle.write(data)


def _refused(result: subprocess.CompletedProcess[str], release: Release, *words: str) -> None:
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for word in (f"--delta-from {release.base}", *words):
        assert word in result.stderr, result.stderr
    assert release.leftovers() == [], "nothing under --out, no scratch directory left"


CHANGES: dict[str, Callable[[Release], object]] = {
    "cut short": lambda r: os.truncate(r.base, r.base.stat().st_size // 2),
    "emptied": lambda r: os.truncate(r.base, 0),
    "grown": lambda r: _append(r.base, b"\0" * 4096),
    "list frame altered": lambda r: _flip(r.base, _frames(r.base)[0] + _frames(r.base)[1] // 2),
    "another kit written over it": lambda r: (os.truncate(r.base, 0), r.base.write_bytes(r.other.read_bytes())),
}


@pytest.mark.parametrize("mode", ["content", "verbatim"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_base_changed_before_its_list_is_read_again_is_refused_naming_it(
    release: Release, change: str, mode: str
) -> None:
    result = release.held(mode, "delta-base-reread", lambda: CHANGES[change](release))
    _refused(result, release, "changed while the delta was built", "build again from a base nothing writes to")


@pytest.mark.parametrize("mode", ["content", "verbatim"])
@pytest.mark.parametrize("change", ["cut short", "another kit written over it"])
def test_a_base_changed_while_the_new_kit_is_built_is_refused_naming_it(
    release: Release, change: str, mode: str
) -> None:
    """Held before the first frame is compressed: the frames the build then reuses are read from the changed file."""
    result = release.held(mode, "build-frame", lambda: CHANGES[change](release))
    _refused(result, release, "changed while the delta was built")


def test_a_base_damaged_from_the_start_is_named_as_damaged(release: Release) -> None:
    """A reused frame whose bytes are not its signed digest, and nothing wrote to the base during the build: the
    base is damaged (not changed meanwhile, not its signers' fault)."""
    with open_kit(release.other) as stream:
        wanted = {frame.sha256 for frame in read_metadata(stream, Caps()).manifest.frames}
    with open_kit(release.base) as stream:
        frames = read_metadata(stream, Caps()).manifest.frames
    number, frame = next((n, f) for n, f in enumerate(frames) if f.sha256 in wanted)
    _flip(release.base, frame.offset + frame.length // 2)
    result = _run(*release.command("content"))
    words = (f"payload frame {number} differs from its signed digest", "the base is damaged", "kit verify")
    _refused(result, release, *words)


def test_a_base_replaced_by_a_rename_is_not_a_change(release: Release) -> None:
    """The build reads the file it verified (the open descriptor), whatever now has its name: the delta is the
    one an undisturbed build writes (it applies to the verified base, whose manifest it names)."""
    undisturbed = _run(*release.command("content"))
    assert undisturbed.returncode == 0, undisturbed.stderr
    expected = release.out.read_bytes()
    release.out.unlink()
    base_bytes = release.base.read_bytes()

    def replace() -> None:
        swap = release.env.root / "swap.kit.tar.zst"
        swap.write_bytes(release.other.read_bytes())
        swap.replace(release.base)

    result = release.held("content", "delta-base-reread", replace)
    assert result.returncode == 0, result.stderr
    assert release.out.read_bytes() == expected
    assert release.base.read_bytes() != base_bytes


@pytest.mark.parametrize("how", ["KIT_FAULT", "KIT_FAULT_SIGNAL"])
def test_a_delta_build_stopped_before_the_plan_then_run_again_converges(release: Release, how: str) -> None:
    undisturbed = _run(*release.command("content"))
    assert undisturbed.returncode == 0, undisturbed.stderr
    expected = release.out.read_bytes()
    release.out.unlink()
    value = "delta-base-reread" if how == "KIT_FAULT" else "TERM@delta-base-reread"
    stopped = _run(*release.command("content"), env={how: value})
    assert stopped.returncode == (137 if how == "KIT_FAULT" else 143), stopped.stderr
    assert not release.out.exists()
    if how == "KIT_FAULT_SIGNAL":
        assert stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr, stopped.stderr
        assert release.leftovers() == []
    rerun = _run(*release.command("content"))
    assert rerun.returncode == 0, rerun.stderr
    assert release.out.read_bytes() == expected
    assert release.leftovers() == ["delta.kit.tar.zst"], "a killed run's scratch directory is cleared by the next"
