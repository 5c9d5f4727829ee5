"""Attacks on the content-delta rebuild's walk of the base's file list (``ops.rebuild_walk``, ``ops.frame_rebuild``).

A target member whose content the walk does not meet at its path (a renamed or copied file) holds its frame back
for a lookup by content in another pass over the base's list. What is asserted: the held-back state is bounded
(frames held back hold neither the delta contents they carry nor a plan per member), so a release that moves a
directory and adds content beside it patches in about the memory of one that does not; the result is the full
build's bytes; a base changed on disk between the walk and the lookup is named, [4], and nothing is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kitbuilder.core.filelist import FILE_LIST
from tests.factories.cli import KitEnv
from tests.factories.kits import member_end
from tests.factories.measure import kit_peak
from tests.integration.test_content_delta import _build, _cli, _files, _one_line

COPIES = 120
NEW_BYTES = 700_000  # a small file (under 1 MiB): it travels whole in the delta, a group frame's worth each


def _new_content(number: int) -> bytes:
    """Distinct per file, compressible (the kits stay small; held decoded it costs its size)."""
    return (f"new file {number}: ".encode() + bytes(range(256)) * 8) * (NEW_BYTES // (2048 + 16))


def _release(kit_env: KitEnv, moved: bool) -> tuple[Path, Path, Path]:
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
        (new / f"f{number:03d}x.bin").write_bytes(_new_content(number))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta = kit_env.root / f"full-{moved}.kit.tar.zst", kit_env.root / f"delta-{moved}.kit.tar.zst"
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    return base, full, delta


def test_held_back_frames_do_not_hold_the_delta_contents_they_carry(kit_env: KitEnv, tmp_path: Path) -> None:
    """Every frame of the moved directory is held back (its copies are met nowhere at their path) and each carries
    a new 700 KB file: ~84 MB of delta content. Held back as planned, each frame kept its carried contents until
    the lookup pass; the patch must peak about as the same release without the move does."""
    peaks = {}
    for moved in (False, True):
        base, full, delta = _release(kit_env, moved)
        out = tmp_path / f"patched-{moved}.kit"
        code, stderr, peaks[moved] = kit_peak("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
        assert code == 0, stderr
        assert out.read_bytes() == full.read_bytes()
    assert peaks[True] < peaks[False] + (32 << 20), peaks
