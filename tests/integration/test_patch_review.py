"""An adversarial pass over `kit patch` (file and directory mode) and `kit build --delta-from`.

Each test is named after a defect this pass found and asserts the behaviour the docs promise
(docs/delta.md, docs/trust-model.md "What kit patch guarantees"): the exit code, one line on
stderr, nothing created, changed or deleted outside the target, and convergence after a kill.
Kills use the KIT_FAULT hook in a child process; nothing here sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories.apply_runs import wait_for
from tests.factories.cli import KitEnv
from tests.factories.measure import kit_peak
from tests.integration.test_hostile_patch import (
    Release,
    _build,
    _cli,
    _kit_tree,
    _make_release,
    _one_line,
    _tree,
)


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _make_release(kit_env)


# ---------------------------------------------------------------------------------------------------------------
# directory mode: the journal kit writes must be one kit reads back


def _many_deep_trees_become_a_file(kit_env: KitEnv) -> Release:
    """docs/operator/a: 240 directory chains 64 deep in the base, one plain file in the target."""
    docs = kit_env.root / "src/docs"
    for number in range(240):
        chain = docs / "a" / f"{number:03d}" / "/".join(["d"] * 64)
        chain.mkdir(parents=True)
        (chain / "f").write_text(f"{number}\n")

    def collapse(src: Path) -> None:
        shutil.rmtree(src / "docs/a")
        (src / "docs/a").write_text("now a file\n")

    return _make_release(kit_env, collapse)


@pytest.mark.slow
def test_journal_for_a_deep_directory_becoming_a_file_is_read_back_after_a_kill(
    kit_env: KitEnv, tmp_path: Path
) -> None:
    """A journal with one step per removed directory outgrew the bound its own reader applies: a kill after the
    commit left a journal every rerun refused as "kit did not write this journal"."""
    deep = _many_deep_trees_become_a_file(kit_env)
    installed = deep.install(tmp_path / "installed")
    killed = deep.patch_dir(installed, fault="patch-dir-committed")
    assert killed.returncode == 137, killed.stderr
    rerun = deep.patch_dir(installed)
    assert rerun.returncode == 0, rerun.stderr
    assert "already patched" in rerun.stdout
    assert _kit_tree(installed) == deep.expected
    assert not (installed / ".kit-patch").exists()


def test_planted_base_manifest_cannot_make_the_journal_bound_large(release: Release, tmp_path: Path) -> None:
    """The journal's size bound grew with the size of base-manifest.json before that file was checked, and the
    file was read whole: 64 MiB of anything there let a 30 MiB journal of tiny values be parsed (~900 MiB RSS)."""
    installed = release.install(tmp_path / "installed")
    killed = release.patch_dir(installed, fault="patch-dir-committed")
    assert killed.returncode == 137
    staging = installed / ".kit-patch"
    with (staging / "base-manifest.json").open("wb") as planted:  # in chunks: this process stays small
        for _ in range(64):
            planted.write(b" " * (1 << 20))
    with (staging / "journal.json").open("wb") as bomb:
        bomb.write(b'{"operations": [')
        for _ in range(30):
            bomb.write(b"[]," * ((1 << 20) // 3))
        bomb.write(b"[]]}")
    before = _tree(installed)
    command = ("patch", installed, release.delta, "--key", release.kit_env.ed_pub, "--in-place")
    code, stderr, peak = kit_peak(*command)
    assert code == 5, stderr
    _one_line(stderr, "journal.json", "more than the", "kit did not write this journal")
    # A forked child's peak RSS starts at this (test) process's size, so compare with tiny planted files.
    small = tmp_path / "small"
    shutil.copytree(installed, small, symlinks=True)
    (small / ".kit-patch/base-manifest.json").write_bytes(b"{}\n")
    (small / ".kit-patch/journal.json").write_bytes(b"[]\n")
    baseline_code, _, baseline = kit_peak(*command[:1], small, *command[2:])
    assert baseline_code == 5
    assert peak - baseline < 20 << 20, f"peak RSS {peak >> 20} MiB against {baseline >> 20} MiB for tiny files"
    assert _tree(installed) == before


def _next_release(kit_env: KitEnv, release: Release, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A third release and the delta from the second to it: (delta, the third release extracted)."""
    (kit_env.root / "src/docs/NEW.md").write_text("newer file\n")
    (kit_env.root / "src/docs/THIRD.md").write_text("third\n")
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 2", "sequence: 3"))
    full = tmp_path / "full3.kit.tar.zst"
    _build(kit_env, full, "1700172800")
    delta = tmp_path / "delta23.kit.tar.zst"
    _build(kit_env, delta, "1700172800", "--delta-from", release.full)
    return delta, _kit_tree(_extracted(full, tmp_path / "third"))


def _extracted(kit: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    subprocess.run(f"zstd -qdc '{kit}' | tar -x -C '{where}'", shell=True, check=True)
    return where


def _journal_steps(release: Release, tmp_path: Path) -> int:
    probe = release.install(tmp_path / "probe")
    assert release.patch_dir(probe, fault="patch-dir-committed").returncode == 137
    return len(json.loads((probe / ".kit-patch/journal.json").read_bytes())["operations"])


def test_journal_whose_steps_all_ran_does_not_block_the_next_release(
    kit_env: KitEnv, release: Release, tmp_path: Path
) -> None:
    """Killed after its last step (manifest.json renamed, journal not yet removed), a patch left a directory that
    is entirely the new kit, yet the next release's delta was refused until the previous delta was found."""
    steps = _journal_steps(release, tmp_path)
    next_delta, third = _next_release(kit_env, release, tmp_path)
    installed = release.install(tmp_path / "installed")
    killed = release.patch_dir(installed, fault=f"patch-dir-after-op:{steps}")
    assert killed.returncode == 137
    assert (installed / ".kit-patch/journal.json").exists()
    result = _cli("patch", installed, next_delta, "--key", kit_env.ed_pub, "--in-place")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _kit_tree(installed) == third
    assert not (installed / ".kit-patch").exists()


def test_journal_with_steps_left_still_needs_its_own_delta(kit_env: KitEnv, release: Release, tmp_path: Path) -> None:
    """The other side of the rule above: a journal with work left is never discarded for another delta."""
    next_delta, _ = _next_release(kit_env, release, tmp_path)
    installed = release.install(tmp_path / "installed")
    assert release.patch_dir(installed, fault="patch-dir-after-op:1").returncode == 137
    before = _tree(installed)
    refused = _cli("patch", installed, next_delta, "--key", kit_env.ed_pub, "--in-place")
    assert refused.returncode == 2
    _one_line(refused.stderr, "journal.json", "finish it first with that delta")
    assert _tree(installed) == before


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points the test makes (tmpfs), unmounted afterwards; skipped where this host cannot mount."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _mount_over(directory: Path, points: list[Path]) -> None:
    """Put a tmpfs over ``directory`` holding the same files: the tree looks the same, on another filesystem."""
    saved = directory.parent / f"{directory.name}.saved"
    shutil.copytree(directory, saved, symlinks=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)], capture_output=True)
    if done.returncode != 0:
        shutil.rmtree(saved)
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
    points.append(directory)
    shutil.copytree(saved, directory, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(saved)


def test_mount_point_inside_the_kit_directory_is_refused_before_anything_changes(
    release: Release, tmp_path: Path, mounted: list[Path]
) -> None:
    """A subdirectory on another filesystem made the rename of a staged file fail with EXDEV after the commit:
    the directory stayed half patched and every rerun failed the same way."""
    installed = release.install(tmp_path / "installed")
    _mount_over(installed / "docs/operator", mounted)
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr, f"{installed}/docs/operator", "another filesystem")
    assert _tree(installed) == before


def test_mount_point_inside_a_directory_that_becomes_a_file_is_refused_before_anything_changes(
    kit_env: KitEnv, tmp_path: Path, mounted: list[Path]
) -> None:
    docs = kit_env.root / "src/docs"
    (docs / "tree/deep").mkdir(parents=True)
    (docs / "tree/deep/a.md").write_text("a\n")

    def collapse(src: Path) -> None:
        shutil.rmtree(src / "docs/tree")
        (src / "docs/tree").write_text("a directory that became a file\n")

    release = _make_release(kit_env, collapse)
    installed = release.install(tmp_path / "installed")
    _mount_over(installed / "docs/operator/tree/deep", mounted)
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr, f"{installed}/docs/operator/tree/deep", "another filesystem")
    assert _tree(installed) == before


# ---------------------------------------------------------------------------------------------------------------
# file mode: kit's own temporary files, and only those


def test_patch_never_removes_the_live_temporary_file_of_another_output(release: Release, tmp_path: Path) -> None:
    """Clearing its leftovers, a patch to out/demo-1.2 removed every ".demo-1.2.*.part": also the live temporary
    file of a concurrent patch to out/demo-1.2.1, which then failed with "No such file or directory"."""
    import sys

    out = tmp_path / "out"
    out.mkdir()
    gate = tmp_path / "gate"
    key = release.kit_env.ed_pub
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    with subprocess.Popen(
        [sys.executable, "-m", "kitbuilder.cli", "patch", release.base, release.delta, "--key", key,
         "--out", out / "demo-1.2.1"],
        env={**env, "KIT_FAULT_WAIT": f"patch-file-member:1:{gate}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as first:  # fmt: skip
        try:
            wait_for(Path(f"{gate}.waiting"), first)
            live = [p.name for p in out.iterdir() if p.name.endswith(".part")]
            assert len(live) == 1, live
            second = _cli("patch", release.base, release.delta, "--key", key, "--out", out / "demo-1.2")
            assert second.returncode == 0, second.stderr
            assert (out / live[0]).exists(), "the other patch's temporary file was removed"
        finally:
            gate.touch()
        _, stderr = first.communicate()
    assert first.returncode == 0, stderr
    assert (out / "demo-1.2.1").read_bytes() == release.full.read_bytes()
    assert (out / "demo-1.2").read_bytes() == release.full.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["demo-1.2", "demo-1.2.1"]


def test_leftover_of_a_killed_patch_is_removed_only_by_a_patch_of_the_same_output(
    release: Release, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    key = release.kit_env.ed_pub
    killed = _cli("patch", release.base, release.delta, "--key", key, "--out", out / "demo-1.2.1",
                  fault="patch-file-member:2")  # fmt: skip
    assert killed.returncode == 137
    leftover = sorted(p.name for p in out.iterdir() if p.name.endswith(".part"))
    assert len(leftover) == 1
    (out / ".demo-1.2.notes.part").write_text("someone else's file\n")
    assert _cli("patch", release.base, release.delta, "--key", key, "--out", out / "demo-1.2").returncode == 0
    assert (out / leftover[0]).exists() and (out / ".demo-1.2.notes.part").exists()
    assert _cli("patch", release.base, release.delta, "--key", key, "--out", out / "demo-1.2.1").returncode == 0
    assert not (out / leftover[0]).exists()
    assert sorted(p.name for p in out.iterdir()) == [".demo-1.2.notes.part", "demo-1.2", "demo-1.2.1"]


@pytest.mark.parametrize("base", ["right", "wrong"])
def test_out_in_a_missing_directory_is_refused_and_no_directory_is_created(
    release: Release, tmp_path: Path, base: str
) -> None:
    """`kit patch --out new/sub/x.kit` made new/ and new/sub/ (kept even when the patch was then refused),
    where every other kit output refuses a missing directory: kit creates no directory the user did not name."""
    before = _tree(tmp_path)
    out = tmp_path / "new/sub/x.kit.tar.zst"
    chosen = release.base if base == "right" else release.full
    result = _cli("patch", chosen, release.delta, "--key", release.kit_env.ed_pub, "--out", out)
    assert result.returncode == 2, result.stderr
    _one_line(result.stderr, str(out), "does not exist")
    assert _tree(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------------
# kit build --delta-from


@pytest.mark.parametrize("alias", ["out_is_full_out", "full_out_is_base", "out_is_base"])
def test_delta_build_whose_outputs_alias_each_other_or_the_base_is_refused(
    release: Release, tmp_path: Path, alias: str
) -> None:
    """`--out X --full-out X` exited 0 reporting both, while X held only the delta (the full kit, written first,
    was replaced by it); naming the base as an output destroyed the base the delta applies to."""
    kit_env = release.kit_env
    out, full = tmp_path / "d.kit.tar.zst", tmp_path / "f.kit.tar.zst"
    if alias == "out_is_full_out":
        full = tmp_path / "sub/../d.kit.tar.zst"
        (tmp_path / "sub").mkdir()
    elif alias == "full_out_is_base":
        full = release.base
    else:
        out = release.base
    before = _tree(tmp_path)
    result = _cli(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--delta-from", release.base, "--out", out, "--full-out", full
    )
    assert result.returncode == 2, result.stderr
    _one_line(result.stderr, "name the same file")
    assert _tree(tmp_path) == before
