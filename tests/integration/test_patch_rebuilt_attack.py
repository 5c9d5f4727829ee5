"""kit patch (file mode) writing rebuilt group frames straight into the new kit beside the frame copier: each
rebuilt frame must fill exactly the place the target's signed frame table gives it.

A target whose signed frame table gives a frame to be rebuilt another length (or another decoded size) than its
signed digest's bytes have is a table that does not describe those bytes: the frames around it land where the
table says, so the rebuilt bytes would leave a hole of zeros or run into the next frame. It is refused with one
line and nothing written, as a copied frame whose length differs is.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import layout
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import MANIFEST_JSON, FrameEntry
from kitbuilder.ops.delta_content import ContentShipper
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_kit
from tests.factories.deltas import craft_delta
from tests.integration import test_hostile_patch

small_fs = test_hostile_patch.small_fs  # the fixture: a 2 MiB tmpfs, unmounted afterwards
NOTES = 60  # 16 KiB each: several groups


def _note(number: int) -> str:
    line = f"note {number}: verify, apply, check the report; row {{}} of the shard. "
    return "".join(line.format(row) for row in range(16384 // len(line)))


def _build(kit_env: KitEnv, out: Path, *extra: object) -> None:
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, *extra, env={"SOURCE_DATE_EPOCH": "1767225600"}
    )
    assert result.exit_code == 0, result.output


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    return subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def _release(kit_env: KitEnv) -> tuple[Path, Path]:
    notes = kit_env.root / "src/docs/notes"
    notes.mkdir()
    for number in range(NOTES):
        (notes / f"{number:03d}.md").write_text(_note(number))
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    for number in (7, 41):
        text = (notes / f"{number:03d}.md").read_text()
        (notes / f"{number:03d}.md").write_text(text.replace("row 100 ", "ROW 100 "))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full)
    return base, full


def _forged_delta(
    kit_env: KitEnv, base_path: Path, full: Path, out: Path, edit: Callable[[Any, set[str]], None]
) -> Path:
    """A content delta from ``base_path`` to ``full`` whose target manifest's frame table is edited by ``edit``
    (given the table and the digests of the frames kit patch rebuilds), re-signed by the release key."""
    with open_kit(base_path) as stream:
        have = {f.sha256 for f in read_metadata(stream, Caps()).manifest.frames}
    with open_kit(full) as stream:
        table = json.loads(read_metadata(stream, Caps()).members[MANIFEST_JSON])["frames"]
    edit(table, {frame["sha256"] for frame in table if frame["sha256"] not in have})
    return craft_delta(kit_env.ed_key, base_path, full, out, edit_target={"frames": table}, content=ContentShipper)


def _reframed(delta: int, edited: list[int]) -> Callable[[Any, set[str]], None]:
    """The first rebuilt frame signed as ``delta`` bytes longer, the frames after it moved to stay back to back;
    its number is appended to ``edited``."""

    def edit(table: Any, rebuilt: set[str]) -> None:
        number = next(n for n, frame in enumerate(table) if frame["sha256"] in rebuilt)
        edited.append(number)
        table[number]["length"] += delta
        for frame in table[number + 1 :]:
            frame["offset"] += delta

    return edit


@pytest.mark.parametrize("delta", [9, -9])
def test_a_rebuilt_frame_signed_with_another_length_is_refused(kit_env: KitEnv, tmp_path: Path, delta: int) -> None:
    base, full = _release(kit_env)
    edited: list[int] = []
    forged = _forged_delta(kit_env, base, full, tmp_path / "forged.kit.tar.zst", _reframed(delta, edited))
    assert run_kit("verify", forged, "--key", kit_env.ed_pub, "--no-state").exit_code == 0  # signed, a valid kit
    out = tmp_path / "out"
    out.mkdir()
    result = _cli("patch", base, forged, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 4, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"signed frame {edited[0]} is" in result.stderr and "the delta is corrupt" in result.stderr, result.stderr
    assert not list(out.iterdir())


def _content_delta(kit_env: KitEnv, frames: str = "content") -> tuple[Path, Path, Path]:
    base, full = _release(kit_env)
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "--delta-from", base, "--delta-frames", frames)
    return base, full, delta


@pytest.mark.parametrize("sig", ["INT", "TERM"])
@pytest.mark.parametrize(
    "point", ["patch-file-rebuilt", "patch-file-rebuilt:2", "patch-file-frames", "patch-file-payload"]
)
def test_a_signal_while_frames_are_rebuilt_and_copied_leaves_nothing(
    kit_env: KitEnv, tmp_path: Path, sig: str, point: str
) -> None:
    # Every target frame of this release is rebuilt from a content delta; a verbatim one has frames to copy.
    base, full, delta = _content_delta(kit_env, "verbatim" if point == "patch-file-frames" else "content")
    out = tmp_path / "out"
    out.mkdir()
    command = ["patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    env["KIT_FAULT_SIGNAL"] = f"{sig}@{point}"
    stopped = subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, command)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert stopped.returncode == {"INT": 130, "TERM": 143}[sig], stopped.stderr
    assert stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    assert not list(out.iterdir())
    result = _cli(*command)
    assert result.returncode == 0, result.stderr
    assert (out / "new.kit").read_bytes() == full.read_bytes()


@pytest.mark.parametrize("free", [0, 8 << 10, 64 << 10, 160 << 10])
def test_disk_full_while_frames_are_rebuilt_and_copied(kit_env: KitEnv, small_fs: Path, free: int) -> None:
    """The disk fills at some point of the payload (none left, or some frames' worth): one line, exit 12, nothing
    left but what was there; once there is room the rerun gives the full build."""
    base, full, delta = _content_delta(kit_env)
    filler = small_fs / "filler"
    with filler.open("wb", buffering=0) as sink, contextlib.suppress(OSError):
        while True:
            sink.write(bytes(4096))
    os.truncate(filler, max(0, filler.stat().st_size - free))
    out = small_fs / "new.kit"
    command = ["patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out]
    result = _cli(*command)
    assert result.returncode == 12, result.stderr
    assert result.stderr.count("\n") == 1 and "No space left" in result.stderr, result.stderr
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]
    filler.unlink()
    result = _cli(*command)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == full.read_bytes()


def test_a_base_written_with_other_group_bounds_verifies_and_patches(
    kit_env: KitEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base whose groups were cut at other bounds (128 KiB to 1 MiB, tried for smaller patches): it verifies, a
    content delta and a verbatim one are built from it, and both patch it to the full build's bytes (readers never
    check where a writer cut a group)."""
    notes = kit_env.root / "src/docs/notes"
    notes.mkdir()
    for number in range(400):  # 6.4 MiB: many groups of up to 1 MiB at those bounds
        (notes / f"{number:03d}.md").write_text(_note(number))
    base = kit_env.root / "base.kit.tar.zst"
    with monkeypatch.context() as patched:
        patched.setattr(layout, "GROUP_MIN", 128 << 10)
        patched.setattr(layout, "GROUP_MAX", 1 << 20)
        _build(kit_env, base)
    sizes = [frame.size for frame in _frames(base)]
    # Groups of at most 1 MiB + LARGE, several under the default GROUP_MIN: not what a default build cuts.
    assert all(size <= (1 << 20) + layout.LARGE for size in sizes), sizes
    assert sum(size < layout.GROUP_MIN for size in sizes) > 1, sizes
    assert run_kit("verify", base, "--key", kit_env.ed_pub, "--no-state").exit_code == 0
    for number in (7, 210, 390):
        text = (notes / f"{number:03d}.md").read_text()
        (notes / f"{number:03d}.md").write_text(text.replace("row 100 ", "ROW 100 "))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full)
    for frames in ("content", "verbatim"):
        delta = kit_env.root / f"{frames}.kit.tar.zst"
        _build(kit_env, delta, "--delta-from", base, "--delta-frames", frames)
        out = tmp_path / f"{frames}.kit"
        result = _cli("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == full.read_bytes()


def _frames(kit: Path) -> tuple[FrameEntry, ...]:
    with open_kit(kit) as stream:
        return read_metadata(stream, Caps()).manifest.frames
