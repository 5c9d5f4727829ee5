"""Hostile output and install directories for `kit patch`, kills at every step, races on the delta path.

Each case asserts the exit code, one line on stderr, and that nothing was written
outside the target (and, for refusals, nothing changed inside it). Kills use the
deterministic KIT_FAULT hook (kitbuilder/faults.py) in a child process; the delta
swap uses the same named point in-process. Disk-full and read-only cases mount a
small tmpfs (we run as root in CI) and are skipped with the reason when mounting fails.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.core import jsonio
from kitbuilder.ops.kitfile import located_index
from tests.factories import hostile
from tests.factories.cli import KitEnv, run_kit
from tests.factories.deltas import craft_delta
from tests.factories.kits import kit_members
from tests.factories.measure import kit_peak

TARGET = "delta/target"


def _build(kit_env: KitEnv, out: Path, epoch: str, *extra: object) -> None:
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, *extra, env={"SOURCE_DATE_EPOCH": epoch}
    )
    assert result.exit_code == 0, result.output


def _extract(kit: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    subprocess.run(f"zstd -qdc '{kit}' | tar -x -C '{target}'", shell=True, check=True)
    return target


def _tree(directory: Path) -> dict[str, str]:
    """Every entry below ``directory`` (links and directories too), never following a link."""
    tree: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_symlink():
            tree[name] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            tree[name] = "dir"
        else:
            tree[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def _kit_tree(directory: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(directory).items() if v != "dir"}


def _cli(*args: object, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `kit` in a child process (a KIT_FAULT kill must not end the test run)."""
    env = dict(os.environ)
    env.pop("KIT_FAULT", None)
    if fault:
        env["KIT_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def _one_line(stderr: str, *words: str) -> None:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"


@dataclass
class Release:
    kit_env: KitEnv
    base: Path
    delta: Path
    full: Path
    original: dict[str, str]  # the base, extracted
    expected: dict[str, str]  # the new kit, extracted

    def install(self, where: Path) -> Path:
        return _extract(self.base, where)

    def patch_dir(self, directory: Path, *extra: object, fault: str | None = None) -> Any:
        return _cli("patch", directory, self.delta, "--key", self.kit_env.ed_pub, "--in-place", *extra, fault=fault)


def _make_release(kit_env: KitEnv, change: Any = None) -> Release:
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base, "1700000000")
    src = kit_env.root / "src"
    (src / "docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, apply, check the report.\n")
    (src / "docs/NEW.md").write_text("new file\n")
    (src / "migrations/21-101/revert.sql").unlink()
    if change is not None:
        change(src)
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full, "1700086400")
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "1700086400", "--delta-from", base)
    original = _kit_tree(_extract(base, kit_env.root / "original"))
    expected = _kit_tree(_extract(full, kit_env.root / "expected"))
    return Release(kit_env, base, delta, full, original, expected)


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _make_release(kit_env)


def _outside(tmp_path: Path) -> Path:
    """A directory beside the target that nothing may touch; a canary file inside."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "canary").write_text("untouched\n")
    return outside


# ---------------------------------------------------------------------------------------------------------------
# the reserved namespace: no kit may carry kit's own state


RESERVED = [".kit-patch/journal.json", ".KIT-PATCH/x", ".new.kit.tar.zst.kit-lock", ".new.kit.tar.zst.a1b2c3.part"]


@pytest.mark.parametrize("name", RESERVED)
def test_build_refuses_a_reserved_name(kit_env: KitEnv, name: str) -> None:
    planted = kit_env.root / "src/docs" / name
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text("{}\n")
    out = kit_env.root / "k.kit.tar.zst"
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 2
    _one_line(result.stderr, str(planted), "reserved for kit's own state")
    assert not out.exists()


@pytest.mark.parametrize("name", RESERVED)
def test_verify_refuses_a_reserved_member(kit_env: KitEnv, name: str) -> None:
    kit = kit_env.root / "hostile.kit.tar.zst"
    kit.write_bytes(hostile.kit(hostile.Member(name, b"{}\n")))
    result = run_kit("verify", kit, "--key", kit_env.ed_pub)
    assert result.exit_code == 5
    _one_line(result.stderr, "reserved for kit's own state")


def _resigned_delta(release: Release, out: Path, *, extra: list[hostile.Member], hook: Any = None) -> Path:
    """The release's delta, re-made member by member and validly signed by the trusted key, plus ``extra``."""
    members = kit_members(release.delta)
    manifest = json.loads(members["manifest.json"])
    listed = [json.loads(line) for line in members["manifest.files.jsonl"].splitlines()]
    payload = [hostile.Member(f["path"], members[f["path"]]) for f in listed]

    def predicate(document: dict[str, Any]) -> None:
        files = document["files"]
        # The factory writes format-1 kits: the delta's kit, delta and checks blocks, the factory's own build block.
        document.update(
            {k: v for k, v in manifest.items() if k not in ("files", "fileList", "apiVersion", "frames", "build")}
        )
        # Format 1 states no component totals (format 2's files, bytes, byRole).
        components = [
            {k: v for k, v in c.items() if k not in ("files", "bytes", "byRole")} for c in manifest["components"]
        ]
        document["components"] = components + [{"id": "docs", "role": "doc"}]
        document["files"] = files
        if hook is not None:
            hook(document)

    out.write_bytes(hostile.Recipe(members=payload + extra, manifest_hook=predicate).build().data)
    return out


def test_signed_delta_shipping_a_journal_is_refused(release: Release, tmp_path: Path) -> None:
    """The review's attack: a genuine signer ships .kit-patch/journal.json to steer the next patch."""
    outside = _outside(tmp_path)
    journal = jsonio.dump_pretty({"operations": [{"op": "replace", "path": "x", "staged": str(outside / "canary")}]})
    evil = _resigned_delta(
        release, tmp_path / "evil.kit.tar.zst", extra=[hostile.Member(".kit-patch/journal.json", journal)]
    )
    installed = release.install(tmp_path / "installed")
    before = _tree(installed)
    verified = _cli("verify", evil, "--key", release.kit_env.ed_pub)
    assert verified.returncode == 5
    _one_line(verified.stderr, ".kit-patch", "reserved")
    result = _cli("patch", installed, evil, "--key", release.kit_env.ed_pub, "--in-place")
    assert result.returncode == 5
    _one_line(result.stderr, ".kit-patch", "reserved")
    assert _tree(installed) == before
    assert (outside / "canary").read_text() == "untouched\n"


def test_installed_kit_listing_a_reserved_path_is_refused(release: Release, tmp_path: Path) -> None:
    """The installed-directory reader applies verify's path rules: a manifest naming a reserved name is refused."""
    crafted = tmp_path / "crafted.kit.tar.zst"
    crafted.write_bytes(hostile.kit(hostile.Member("docs/.new.kit.tar.zst.kit-lock", b"{}\n")))
    installed = tmp_path / "installed"
    installed.mkdir()
    # tar -x writes it as any extractor would; kit patch must refuse before acting on it.
    subprocess.run(f"zstd -qdc '{crafted}' | tar -x -C '{installed}'", shell=True, check=True)
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 5
    _one_line(result.stderr, "manifest.json", ".new.kit.tar.zst.kit-lock", "reserved")
    assert _tree(installed) == before


# ---------------------------------------------------------------------------------------------------------------
# planted journals and staging


def _plant(release: Release, installed: Path, ops: list[dict[str, str]], **override: Any) -> None:
    """A journal bound to the right base and target, beside the right base manifest, as anyone with the delta
    and write access to the directory can plant one."""
    base_manifest = (installed / "manifest.json").read_bytes()
    target = kit_members(release.delta)[f"{TARGET}/manifest.json"]
    document = {
        "journalVersion": 1,
        "baseManifestSha256": hashlib.sha256(base_manifest).hexdigest(),
        "targetManifestSha256": hashlib.sha256(target).hexdigest(),
        "deltaSha256": hashlib.sha256(release.delta.read_bytes()).hexdigest(),
        "operations": ops,
    }
    document.update({k: v for k, v in override.items() if k != "base_manifest"})
    staging = installed / ".kit-patch"
    staging.mkdir(exist_ok=True)
    (staging / "base-manifest.json").write_bytes(override.get("base_manifest", base_manifest))
    # Format 2: the base's signed file list beside it, as kit keeps it (anyone can copy the installed one).
    (staging / "base-files.jsonl").write_bytes((installed / "manifest.files.jsonl").read_bytes())
    (staging / "journal.json").write_bytes(jsonio.dump_pretty(document))


ESCAPES = {
    "staged_name_escapes": [{"op": "replace", "path": "docs/operator/NEW.md", "staged": "../../outside/canary"}],
    "staged_name_absolute": [{"op": "replace", "path": "docs/operator/NEW.md", "staged": "/etc/hostname"}],
    "target_path_escapes": [{"op": "replace", "path": "../outside/canary", "staged": "000001"}],
    "target_path_not_in_target": [{"op": "replace", "path": "evil.sh", "staged": "000001"}],
    "delete_escapes": [{"op": "delete", "path": "../outside/canary"}],
    "delete_absolute": [{"op": "delete", "path": "/tmp/x"}],
    "delete_file_the_target_keeps": [{"op": "delete", "path": "docs/operator/blob.bin"}],
    "delete_user_file": [{"op": "delete", "path": "notes.txt"}],
    "rmdir_anything": [{"op": "rmdir", "path": "docs"}],
    "unknown_op": [{"op": "chmod", "path": "docs/operator/NEW.md"}],
    "extra_field": [{"op": "delete", "path": "migrations/21-101-shard-index/revert.sql", "follow": "yes"}],
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_planted_journal_is_refused(release: Release, tmp_path: Path, case: str) -> None:
    outside = _outside(tmp_path)
    installed = release.install(tmp_path / "installed")
    (installed / "notes.txt").write_text("the operator's own notes\n")
    _plant(release, installed, ESCAPES[case])
    (installed / ".kit-patch/000001").write_text("#!/bin/sh\nevil\n")
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 5, result.stderr
    _one_line(result.stderr, "journal.json", "operations[0]")
    assert _tree(installed) == before
    assert _tree(outside) == {"canary": hashlib.sha256(b"untouched\n").hexdigest()}


@pytest.mark.parametrize(
    "override",
    [
        {"journalVersion": 2},
        {"base_manifest": b"{}\n"},
        {"operations": "rm -rf"},
    ],
    ids=["version", "base_manifest_not_the_signed_one", "operations_not_a_list"],
)
def test_malformed_journal_is_refused(release: Release, tmp_path: Path, override: dict[str, Any]) -> None:
    installed = release.install(tmp_path / "installed")
    _plant(release, installed, [], **override)
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 5
    _one_line(result.stderr, "journal.json")
    assert _tree(installed) == before


def test_journal_beside_another_base_file_list_is_refused(release: Release, tmp_path: Path) -> None:
    """The base's file list kept beside the journal must be the one its manifest signs (it bounds the deletes)."""
    installed = release.install(tmp_path / "installed")
    _plant(release, installed, [{"op": "delete", "path": "notes.txt"}])
    listed = installed / ".kit-patch/base-files.jsonl"
    listed.write_bytes(listed.read_bytes() + b'{"at":0,"component":"docs","frame":0,"path":"notes.txt",' + b"}\n")
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 5, result.stderr
    _one_line(result.stderr, "base-files.jsonl", "kit did not write this journal")
    assert _tree(installed) == before


def test_journal_bomb_is_refused_before_it_is_parsed(release: Release, tmp_path: Path) -> None:
    """64 MiB of tiny JSON values: refused by its size, which the verified target and base bound, not parsed."""
    installed = release.install(tmp_path / "installed")
    _plant(release, installed, [])
    with (installed / ".kit-patch/journal.json").open("wb") as bomb:  # in chunks: this process stays small
        bomb.write(b"[")
        for _ in range(64):
            bomb.write(b"[]," * ((1 << 20) // 3))
        bomb.write(b"[]]")
    before = _tree(installed)
    command = ("patch", installed, release.delta, "--key", release.kit_env.ed_pub, "--in-place")
    code, stderr, peak = kit_peak(*command)
    assert code == 5
    _one_line(stderr, "journal.json", "more than the", "kit did not write this journal")
    # A forked child's peak RSS starts at this (test) process's size, so compare with a tiny planted journal.
    small = tmp_path / "small"
    shutil.copytree(installed, small, symlinks=True)
    (small / ".kit-patch/journal.json").write_bytes(b"[]\n")
    baseline_code, _, baseline = kit_peak(*command[:1], small, *command[2:])
    assert baseline_code == 5
    assert peak - baseline < 20 << 20, f"peak RSS {peak >> 20} MiB against {baseline >> 20} MiB for a tiny journal"
    assert _tree(installed) == before


def test_journal_of_another_delta_is_refused_and_its_own_delta_finishes_it(
    kit_env: KitEnv, release: Release, tmp_path: Path
) -> None:
    installed = release.install(tmp_path / "installed")
    killed = release.patch_dir(installed, fault="patch-dir-committed")
    assert killed.returncode == 137
    assert (installed / ".kit-patch/journal.json").exists()
    # A second genuine delta from the same base to another release.
    other_src = kit_env.root / "src/docs/OTHER.md"
    other_src.write_text("another release\n")
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 2", "sequence: 3"))
    other = tmp_path / "other.kit.tar.zst"
    _build(kit_env, other, "1700172800", "--delta-from", release.base)
    before = _tree(installed)
    # --no-state: verifying the other delta would otherwise record sequence 3 and refuse sequence 2 afterwards.
    refused = _cli("patch", installed, other, "--key", kit_env.ed_pub, "--in-place", "--no-state")
    assert refused.returncode == 2
    _one_line(refused.stderr, "journal.json", "interrupted patch", "finish it first with that delta")
    assert _tree(installed) == before
    finished = release.patch_dir(installed)
    assert finished.returncode == 0, finished.stderr
    assert "already patched" in finished.stdout
    assert _kit_tree(installed) == release.expected


@pytest.mark.parametrize(
    "shape", ["staging_is_a_link", "journal_is_a_link", "staging_is_a_file", "staged_file_is_a_link"]
)
def test_planted_staging_is_refused(release: Release, tmp_path: Path, shape: str) -> None:
    outside = _outside(tmp_path)
    (outside / "journal.json").write_bytes(b'{"operations": []}\n')
    installed = release.install(tmp_path / "installed")
    if shape == "staging_is_a_link":
        (installed / ".kit-patch").symlink_to(outside)
    elif shape == "journal_is_a_link":
        (installed / ".kit-patch").mkdir()
        (installed / ".kit-patch/journal.json").symlink_to(outside / "journal.json")
    elif shape == "staging_is_a_file":
        (installed / ".kit-patch").write_text("not a directory\n")
    else:  # a journal bound to this delta whose staged file is a link to a file outside
        _plant(release, installed, [{"op": "replace", "path": "docs/operator/RUNBOOK.md", "staged": "000001"}])
        (installed / ".kit-patch/000001").symlink_to(outside / "canary")
    before, outside_before = _tree(installed), _tree(outside)
    result = release.patch_dir(installed)
    assert result.returncode == 2
    _one_line(result.stderr, ".kit-patch", "and rerun")
    assert _tree(installed) == before
    assert _tree(outside) == outside_before


@pytest.mark.parametrize("where", ["docs/operator", "docs"])
def test_link_inside_the_installed_tree_is_not_followed(release: Release, tmp_path: Path, where: str) -> None:
    """A directory of the kit replaced by a link to elsewhere: patch refuses instead of writing through it."""
    outside = _outside(tmp_path)
    installed = release.install(tmp_path / "installed")
    moved = outside / "moved"
    shutil.move(installed / where, moved)
    (installed / where).symlink_to(moved)
    before, outside_before = _tree(installed), _tree(outside)
    result = release.patch_dir(installed)
    assert result.returncode == 4
    _one_line(result.stderr, f"{installed}/{where}", "symbolic link")
    assert _tree(installed) == before
    assert _tree(outside) == outside_before


# ---------------------------------------------------------------------------------------------------------------
# the delta: its signed target digest, and only the descriptor that was verified


def test_target_digest_is_checked_in_both_modes(release: Release, tmp_path: Path) -> None:
    """A delta whose signed targetManifestSha256 does not match its delta/target/manifest.json."""

    def wrong_target(info: dict[str, Any]) -> None:
        info["targetManifestSha256"] = "0" * 64

    key = release.kit_env.ed_key
    lying = craft_delta(key, release.base, release.full, tmp_path / "lying.kit.tar.zst", edit_info=wrong_target)
    installed = release.install(tmp_path / "installed")
    before = _tree(installed)
    in_dir = _cli("patch", installed, lying, "--key", release.kit_env.ed_pub, "--in-place")
    assert in_dir.returncode == 4
    _one_line(in_dir.stderr, f"{TARGET}/manifest.json", "the delta signed")
    assert _tree(installed) == before
    out = tmp_path / "new.kit.tar.zst"
    in_file = _cli("patch", release.base, lying, "--key", release.kit_env.ed_pub, "--out", out)
    assert in_file.returncode == 4
    _one_line(in_file.stderr, f"{TARGET}/manifest.json", "the delta signed")
    assert not out.exists()


@pytest.mark.parametrize("mode", ["file", "directory"])
@pytest.mark.parametrize("swap_in", ["another_genuine_delta", "garbage"])
def test_delta_swapped_after_verification_is_never_used(
    kit_env: KitEnv, release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, swap_in: str
) -> None:
    """At the named point between verify and use, another file is renamed over the delta path."""
    if swap_in == "garbage":
        replacement = tmp_path / "garbage.kit.tar.zst"
        replacement.write_bytes(b"\0" * 4096)
    else:
        (kit_env.root / "src/docs/RUNBOOK.md").write_text("# Runbook\n\nSomething else entirely.\n")
        kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 2", "sequence: 3"))
        replacement = tmp_path / "other.kit.tar.zst"
        _build(kit_env, replacement, "1700172800", "--delta-from", release.base)
    from kitbuilder import faults

    real_point = faults.point
    swapped: list[str] = []

    def swap(name: str) -> None:
        if name == "patch-verified" and not swapped:
            os.replace(replacement, release.delta)
            swapped.append(name)
        real_point(name)

    monkeypatch.setattr(faults, "point", swap)
    if mode == "file":
        out = tmp_path / "new.kit.tar.zst"
        result = run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == release.full.read_bytes()
    else:
        installed = release.install(tmp_path / "installed")
        result = run_kit("patch", installed, release.delta, "--key", kit_env.ed_pub, "--in-place")
        assert result.exit_code == 0, result.output
        assert _kit_tree(installed) == release.expected
    assert swapped, "the swap point was reached"


# ---------------------------------------------------------------------------------------------------------------
# file mode: locks, temp files, reruns


def test_planted_lock_link_creates_nothing_outside(release: Release, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / ".new.kit.tar.zst.kit-lock").symlink_to(outside / "created-by-kit")
    (out_dir / ".new2.kit.tar.zst.kit-lock").symlink_to(outside / "canary")
    for name in ("new.kit.tar.zst", "new2.kit.tar.zst"):
        result = _cli("patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--out", out_dir / name)
        assert result.returncode == 2
        _one_line(result.stderr, f".{name}.kit-lock", "remove it and rerun")
        assert not (out_dir / name).exists()
    assert _tree(outside) == {"canary": hashlib.sha256(b"untouched\n").hexdigest()}


def test_planted_lock_fifo_is_refused_without_hanging(release: Release, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".new.kit.tar.zst.kit-lock")
    result = _cli(
        "patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--out", tmp_path / "new.kit.tar.zst"
    )
    assert result.returncode == 2
    _one_line(result.stderr, ".new.kit.tar.zst.kit-lock")


def test_out_naming_a_directory_is_a_usage_error(release: Release, tmp_path: Path) -> None:
    (tmp_path / "somewhere").mkdir()
    result = _cli(
        "patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--out", tmp_path / "somewhere"
    )
    assert result.returncode == 2
    _one_line(result.stderr, "somewhere", "is a directory")
    assert list((tmp_path / "somewhere").iterdir()) == []


@pytest.mark.parametrize("how", ["in_place", "out"])
def test_kill_after_the_final_rename_then_rerun_reports_already_patched(
    release: Release, tmp_path: Path, how: str
) -> None:
    target = release.base if how == "in_place" else tmp_path / "new.kit.tar.zst"
    where = ["--in-place"] if how == "in_place" else ["--out", target]
    args = ["patch", release.base, release.delta, "--key", release.kit_env.ed_pub, *where]
    killed = _cli(*args, fault="patch-file-renamed")
    assert killed.returncode == 137
    assert target.read_bytes() == release.full.read_bytes()
    assert (target.parent / f".{target.name}.kit-lock").exists(), "the kill left its lock file"
    rerun = _cli(*args, "--json")
    assert rerun.returncode == 0, rerun.stderr
    document = json.loads(rerun.stdout)
    assert document["alreadyPatched"] is True and document["kit"]["sequence"] == 2
    assert target.read_bytes() == release.full.read_bytes()
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    text = _cli(*args)
    assert text.returncode == 0 and text.stdout.startswith("already patched:")


def test_kill_mid_write_leaves_a_part_file_the_rerun_removes(release: Release, tmp_path: Path) -> None:
    args = ["patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--in-place"]
    before = release.base.read_bytes()
    killed = _cli(*args, fault="patch-file-member:2")
    assert killed.returncode == 137
    assert release.base.read_bytes() == before
    assert list(release.base.parent.glob(f".{release.base.name}.*.part"))
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert release.base.read_bytes() == release.full.read_bytes()
    assert not list(release.base.parent.glob(f".{release.base.name}.*"))


def test_already_patched_output_is_verified_not_assumed(release: Release) -> None:
    args = ["patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--in-place"]
    assert _cli(*args).returncode == 0
    from kitbuilder.archive.index import MemberSpan
    from kitbuilder.archive.reader import Caps

    with release.base.open("rb") as stream:
        entry = located_index(stream, Caps()).by_path()["docs/operator/blob.bin"]
    assert isinstance(entry, MemberSpan)
    frame = entry.frames[-1]  # format 2: the frame holding blob.bin's data (with its group's other members)
    data = bytearray(release.base.read_bytes())
    data[frame.offset + frame.length - 20] ^= 0x01
    release.base.write_bytes(bytes(data))
    rerun = _cli(*args)
    assert rerun.returncode in (4, 5)
    _one_line(rerun.stderr, f"offset {frame.offset}")


def test_rerun_of_a_completed_directory_patch_reports_already_patched(release: Release, tmp_path: Path) -> None:
    installed = release.install(tmp_path / "installed")
    assert release.patch_dir(installed).returncode == 0
    rerun = release.patch_dir(installed, "--json")
    assert rerun.returncode == 0
    document = json.loads(rerun.stdout)
    assert document["alreadyPatched"] is True and document["rolledForward"] is False
    assert _kit_tree(installed) == release.expected


# ---------------------------------------------------------------------------------------------------------------
# directory mode: a kill at every step, file <-> directory transitions


def _file_becomes_directory(src: Path) -> None:
    (src / "docs/guide.md").unlink()
    (src / "docs/guide.md").mkdir()
    (src / "docs/guide.md/index.md").write_text("the guide, now a directory\n")
    (src / "docs/guide.md/more.md").write_text("and more\n")
    (src / "docs/tree").rename(src / "docs/tree.tmp")
    (src / "docs/tree").write_text("a directory that became a file\n")
    shutil.rmtree(src / "docs/tree.tmp")


@pytest.fixture
def transition(kit_env: KitEnv) -> Release:
    """Between base and target, docs/operator/guide.md turns into a directory and docs/operator/tree into a file."""
    docs = kit_env.root / "src/docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "guide.md").write_text("the guide\n")
    (docs / "tree/deep").mkdir(parents=True)
    (docs / "tree/deep/a.md").write_text("a\n")
    (docs / "tree/b.md").write_text("b\n")
    return _make_release(kit_env, _file_becomes_directory)


def _operations(release: Release, tmp_path: Path) -> int:
    probe = release.install(tmp_path / "probe")
    assert release.patch_dir(probe, fault="patch-dir-committed").returncode == 137
    journal = json.loads((probe / ".kit-patch/journal.json").read_bytes())
    kinds = {o["op"] for o in journal["operations"]}
    assert kinds == {"delete", "rmdir", "replace"}, kinds
    return len(journal["operations"])


def test_clean_patch_across_file_directory_transitions(transition: Release, tmp_path: Path) -> None:
    installed = transition.install(tmp_path / "installed")
    result = transition.patch_dir(installed)
    assert result.returncode == 0, result.stderr
    assert _kit_tree(installed) == transition.expected
    assert not (installed / ".kit-patch").exists()


@pytest.mark.slow
def test_kill_at_every_step_then_rerun_converges(transition: Release, tmp_path: Path) -> None:
    count = _operations(transition, tmp_path)
    faults = [f"patch-dir-after-op:{n}" for n in range(1, count + 1)]
    faults += ["patch-dir-staged-file:1", "patch-dir-staged", "patch-dir-committed", "patch-dir-journal-removed"]
    for number, fault in enumerate(faults):
        installed = transition.install(tmp_path / f"installed-{number}")
        killed = transition.patch_dir(installed, fault=fault)
        assert killed.returncode == 137, (fault, killed.stderr)
        state = {k: v for k, v in _kit_tree(installed).items() if not k.startswith(".kit-patch/")}
        if not (installed / ".kit-patch/journal.json").exists():
            # Without a committed journal the tree is all old (before the commit) or all new (after the end).
            assert state in (transition.original, transition.expected), fault
        # A second kill during the roll-forward itself, then a clean rerun.
        if fault.startswith("patch-dir-after-op:"):
            again = transition.patch_dir(installed, fault="patch-dir-after-op:1")
            assert again.returncode in (0, 137), (fault, again.stderr)
        rerun = run_kit("patch", installed, transition.delta, "--key", transition.kit_env.ed_pub, "--in-place")
        assert rerun.exit_code == 0, (fault, rerun.stderr)
        assert _kit_tree(installed) == transition.expected, fault
        assert not (installed / ".kit-patch").exists(), fault


def test_directory_holding_foreign_files_where_a_file_must_go_is_refused_before_anything_changes(
    transition: Release, tmp_path: Path
) -> None:
    installed = transition.install(tmp_path / "installed")
    (installed / "docs/operator/tree/mine.txt").write_text("the operator's file\n")
    before = _tree(installed)
    result = transition.patch_dir(installed)
    assert result.returncode == 4
    _one_line(result.stderr, "docs/operator/tree", "mine.txt", "move it away")
    assert _tree(installed) == before


# ---------------------------------------------------------------------------------------------------------------
# environment errors: disk full, read-only


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards; skipped where this host cannot mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory`` until it refuses another byte (unbuffered writes)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_disk_full_in_file_mode(release: Release, small_fs: Path) -> None:
    filler = _fill(small_fs)
    out = small_fs / "new.kit.tar.zst"
    args = ["patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--out", out]
    result = _cli(*args)
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr, str(out), "No space left", "free space")
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]
    filler.unlink()
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == release.full.read_bytes()
    assert sorted(p.name for p in small_fs.iterdir()) == ["new.kit.tar.zst"]


def test_disk_full_in_directory_mode(release: Release, small_fs: Path) -> None:
    installed = release.install(small_fs / "installed")
    filler = _fill(small_fs)
    before = _tree(installed)
    result = release.patch_dir(installed)
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr, str(installed), "No space left")
    assert _tree(installed) == before, "nothing half-written; the staging is gone"
    filler.unlink()
    rerun = release.patch_dir(installed)
    assert rerun.returncode == 0, rerun.stderr
    assert _kit_tree(installed) == release.expected


@pytest.mark.parametrize("mode", ["file", "directory"])
def test_read_only_target(release: Release, small_fs: Path, mode: str) -> None:
    installed = release.install(small_fs / "installed")
    before = _tree(small_fs)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True, text=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
    if mode == "directory":
        result = release.patch_dir(installed)
        _one_line(result.stderr, f"{installed}/.kit-patch", "Read-only file system")
    else:
        out = small_fs / "new.kit.tar.zst"
        result = _cli("patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--out", out)
        _one_line(result.stderr, ".new.kit.tar.zst.kit-lock", "Read-only file system")
    assert result.returncode == 12
    assert _tree(small_fs) == before
