"""Attacks on the content-delta rebuild's walk of the base's file list (``ops.rebuild_walk``, ``ops.frame_rebuild``).

A target member whose content the walk does not meet at its path (a renamed or copied file) holds its frame back
for a lookup by content in another pass over the base's list. What is asserted: the held-back state is bounded
(frames held back hold neither the delta contents they carry nor a plan per member), so a release that moves a
directory and adds content beside it patches in about the memory of one that does not; the result is the full
build's bytes; a base changed on disk between the walk and the lookup is named, [4], and nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kitbuilder.archive import content_delta
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.ops import delta_content, frame_rebuild
from kitbuilder.ops.delta_content import Shipped
from tests.factories.apply_runs import wait_for
from tests.factories.cli import KitEnv, run_kit
from tests.factories.kits import member_end
from tests.factories.measure import kit_peak
from tests.integration import test_content_delta
from tests.integration.test_content_delta import (
    Release,
    _build,
    _cli,
    _extract,
    _files,
    _manifest,
    _one_line,
    _signed_delta,
    _source_of,
)

release = test_content_delta.release  # the fixture: a base, its next release built in full and as a content delta

COPIES = 200
NEW_BYTES = 700_000  # a small file (under 1 MiB): it travels whole in the delta, a group frame's worth each


def _new_content(number: int, size: int) -> bytes:
    """Distinct per file, compressible (the kits stay small; held decoded it costs its size)."""
    return (f"new file {number}: ".encode() + bytes(range(256)) * 8) * (size // (2048 + 16))


def _release(kit_env: KitEnv, moved: bool, size: int = NEW_BYTES) -> tuple[Path, Path, Path]:
    """A base with a directory of small files; the next release adds a 700 KB file after each of them, with the
    directory moved (``moved``: every copy is met nowhere at its path, so every frame is held back) or in place."""
    docs = kit_env.root / "src/docs"
    old = docs / "a"
    shutil.rmtree(docs / "b", ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    for number in range(COPIES):
        (old / f"f{number:03d}.txt").write_text(f"license {number}\n" * 40)
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 2", "sequence: 1"))
    base = kit_env.root / f"base-{moved}.kit.tar.zst"
    _build(kit_env, base)
    new = docs / "b" if moved else old
    if moved:
        old.rename(new)
    for number in range(COPIES):
        (new / f"f{number:03d}x.bin").write_bytes(_new_content(number, size))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta = kit_env.root / f"full-{moved}.kit.tar.zst", kit_env.root / f"delta-{moved}.kit.tar.zst"
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    return base, full, delta


def test_held_back_frames_do_not_hold_the_delta_contents_they_carry(kit_env: KitEnv, tmp_path: Path) -> None:
    """Every frame of the moved directory is held back (its copies are met nowhere at their path) and each carries
    a new 700 KB file: ~140 MB of delta content. Held back as planned, each frame kept its carried contents until
    the lookup pass; the patch must peak about as the same release without the move does."""
    peaks = {}
    for moved in (False, True):
        base, full, delta = _release(kit_env, moved)
        out = tmp_path / f"patched-{moved}.kit"
        code, stderr, peaks[moved] = kit_peak("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
        assert code == 0, stderr
        assert out.read_bytes() == full.read_bytes()
    assert peaks[True] < peaks[False] + (40 << 20), peaks


def _patch_held(base: Path, delta: Path, out: Path, kit_env: KitEnv, fault: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")} | fault
    command = [sys.executable, "-m", "kitbuilder.cli", "patch", base, delta, "--key", kit_env.ed_pub, "--no-state"]
    return subprocess.Popen([*map(str, command), "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("altered", ["file list", "frame"])
def test_a_base_changed_between_the_walk_and_the_lookup_is_named(kit_env: KitEnv, tmp_path: Path, altered: str) -> None:
    """The patch is held where the lookup pass starts (the walk has read the base's list and planned from it); the
    base is then changed on disk: its file list, or a payload frame the held-back frames draw on. The lookup or the
    worker reading that frame names the base [4], one line; nothing is written under the output's name."""
    base, _, delta = _release(kit_env, moved=True, size=20_000)
    out = tmp_path / "out"
    out.mkdir()
    gate = tmp_path / "go"
    child = _patch_held(base, delta, out / "new.kit", kit_env, {"KIT_FAULT_WAIT": f"patch-file-rebuild-lookup:{gate}"})
    wait_for(Path(f"{gate}.waiting"), child)
    if altered == "file list":
        _flip(base, member_end(base, FILE_LIST) - 20)
        words = [f"{base}: {FILE_LIST}", "the base is damaged"]
    else:
        # Every base frame of the moved directory: the held-back frames draw on one or more of them (which, the
        # grouping decides; the delta may carry some target frames whole).
        manifest = _manifest(base)
        for number in sorted({e.frame or 0 for e in manifest.files if "/a/" in e.path}):
            frame = manifest.frames[number]
            _flip(base, frame.offset + frame.length // 2)
        words = [str(base), "the base is damaged"]
    gate.touch()
    _, stderr = child.communicate()
    assert child.returncode == 4, stderr
    _one_line(stderr, *words)
    assert _files(out) == set()


def test_a_kill_at_the_lookup_then_a_rerun_converges(kit_env: KitEnv, tmp_path: Path) -> None:
    base, full, delta = _release(kit_env, moved=True, size=20_000)
    out = tmp_path / "out"
    out.mkdir()
    command = ["patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit"]
    killed = _cli(*command, fault="patch-file-rebuild-lookup")
    assert killed.returncode == 137, killed.stderr
    assert not (out / "new.kit").exists()
    result = _cli(*command)
    assert result.returncode == 0, result.stderr
    assert (out / "new.kit").read_bytes() == full.read_bytes()
    assert _files(out) == {"new.kit"}


def test_lookups_run_while_the_walk_is_under_way_give_the_full_build(
    kit_env: KitEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a bound of a few keys, a lookup pass over the base's list runs each time a few frames are held back,
    between pieces of the walk's own pass over the same list: the result is still the full build's bytes."""
    monkeypatch.setattr(frame_rebuild, "_HELD_MAX", 3)
    base, full, delta = _release(kit_env, moved=True, size=20_000)
    out = tmp_path / "new.kit"
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == full.read_bytes()


def test_moves_copies_duplicates_and_empty_files_patch_to_the_full_build(kit_env: KitEnv, tmp_path: Path) -> None:
    """One release of every shape the walk can miss or meet twice: files moved to another directory (met nowhere at
    their path), a content the base holds several times copied to new paths, empty files new and moved, a file
    changed in place (a patch against the base file at its path) next to moved ones, a file removed."""
    docs = kit_env.root / "src/docs"
    for name in ("a", "b"):
        (docs / name).mkdir()
    for number in range(30):
        (docs / f"a/{number:02d}.txt").write_text(f"a {number}\n" * 6000)
        (docs / f"b/{number:02d}.txt").write_text("the same\n" * 200 if number % 3 == 0 else f"b {number}\n" * 12000)
    (docs / "a/empty").write_bytes(b"")
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    (docs / "a").rename(docs / "c")
    (docs / "d").mkdir()
    for number in range(0, 30, 3):
        (docs / f"d/copy{number:02d}.txt").write_text("the same\n" * 200)
        (docs / f"d/empty{number:02d}").write_bytes(b"")
    (docs / "c/05.txt").write_text((docs / "c/05.txt").read_text().replace("a 5\n", "A 5\n", 3))
    (docs / "b/07.txt").write_text((docs / "b/07.txt").read_text() + "one more\n")
    (docs / "b/08.txt").unlink()
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta = kit_env.root / "full.kit.tar.zst", kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    out = tmp_path / "new.kit"
    result = _cli("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == full.read_bytes()


def test_a_patch_against_a_base_content_at_another_path_in_a_later_frame_patches_to_the_full_build(
    release: Release, tmp_path: Path
) -> None:
    """A signed delta whose patches are made against another base file's content (the last note, in the base's last
    frame) than the one at their path: the walk meets the file at the path with another content, so the frame is
    held back and the lookup places the patch's base content in a later frame. The result is the full build's."""
    contents = {}
    for kit, name in ((release.base, "base"), (release.full, "full")):
        tree = _extract(kit, tmp_path / name)
        contents.update(
            {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
        )
    last = (tmp_path / "base/docs/operator/notes/119.md").read_bytes()
    last_sha256 = hashlib.sha256(last).hexdigest()
    manifest = _manifest(release.base)
    frames = {e.path.rsplit("/", 1)[-1]: e.frame for e in manifest.files if "/notes/" in e.path}
    assert frames["119.md"] > frames["007.md"]  # the patch's base content lies in a later base frame

    def against_the_last(item: Shipped) -> Shipped:
        target = _source_of(item)
        patch = content_delta.encode(contents[target], last)
        return Shipped(delta_content.patch_name(target, last_sha256), patch, item.role)

    delta = _signed_delta(release, tmp_path / "elsewhere.kit.tar.zst", against_the_last)
    out = tmp_path / "new.kit"
    result = _cli("patch", release.base, delta, "--key", release.kit_env.ed_pub, "--no-state", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == release.full.read_bytes()


@pytest.mark.slow
def test_lookups_between_frames_of_a_long_base_list_give_the_full_build(
    kit_env: KitEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base list of several frames (over 4 MiB: 24,000 files) and a release renaming all of them, with a small
    batch of keys: lookup passes over the list run while the walk is between two of its frames, on the same
    descriptor. Each read of the walk seeks to its own frame, so the result is the full build's bytes."""
    monkeypatch.setattr(frame_rebuild, "_HELD_MAX", 2000)
    docs = kit_env.root / "src/docs"
    for number in range(24_000):
        directory = docs / f"m{number // 1000:02d}"
        if number % 1000 == 0:
            directory.mkdir()
        (directory / f"file-{number:06d}-{'x' * 40}.txt").write_text(f"file {number}\n")
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    file_list = _manifest(base).file_list
    assert file_list is not None and file_list.size > 4 << 20  # its data spans more than one frame
    # Each file renamed in its directory: the walk moves on a directory at a time, beside the lookups.
    for path in sorted(docs.glob("m*/file-*")):
        path.rename(path.with_name(path.name.replace("file-", "page-")))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta = kit_env.root / "full.kit.tar.zst", kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    out = tmp_path / "new.kit"
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == full.read_bytes()
