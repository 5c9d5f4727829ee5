"""Delta kits and kit patch: equal to a full build, refused when mixed up, crash-safe in place."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories.cli import KitEnv, run_json, run_kit


def _build(kit_env: KitEnv, out: Path, epoch: str, *extra: object) -> None:
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, *extra, env={"SOURCE_DATE_EPOCH": epoch}
    )
    assert result.exit_code == 0, result.output


def _next_release(kit_env: KitEnv, sequence: int = 2) -> None:
    src = kit_env.root / "src"
    (src / "docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, apply, check the report.\n")
    (src / "docs/NEW.md").write_text("new file\n")
    (src / "migrations/21-101/revert.sql").unlink()
    text = kit_env.spec.read_text()
    kit_env.spec.write_text(text.replace("sequence: 1", f"sequence: {sequence}"))


@pytest.fixture
def release_pair(kit_env: KitEnv) -> tuple[Path, Path, Path]:
    """(base kit, delta kit, full build of the new release)."""
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base, "1700000000")
    _next_release(kit_env)
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full, "1700086400")
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "1700086400", "--delta-from", base)
    return base, delta, full


def test_delta_is_small_and_verifies_on_its_own(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, delta, full = release_pair
    # Format 2: this small kit's payload is one group frame. With --delta-frames verbatim the delta ships that frame
    # as it is (behind the 512-byte header frame of delta/frames/<its digest>); by default it ships the changed
    # files' contents instead (tests/integration/test_content_delta.py), which is smaller.
    verbatim = kit_env.root / "verbatim.kit.tar.zst"
    _build(kit_env, verbatim, "1700086400", "--delta-from", base, "--delta-frames", "verbatim")
    assert _frames(verbatim)[1] == _frames(full)[0]
    assert _frames(full)[0] not in _frames(delta)
    assert delta.stat().st_size < verbatim.stat().st_size
    code, report = run_json("verify", delta, "--key", kit_env.ed_pub)
    assert code == 0
    assert report["delta"]["baseSequence"] == 1
    assert report["delta"]["removed"] == ["migrations/21-101-shard-index/revert.sql"]
    assert any("DELTA kit" in check for check in report["checks"])
    code, inspected = run_json("inspect", delta)
    assert code == 0 and inspected["delta"]["baseSequence"] == 1
    from kitbuilder.core import schemas

    assert schemas.first_error("inspect-report", inspected) is None


def _frames(kit: Path) -> list[str]:
    from kitbuilder.archive.reader import Caps
    from kitbuilder.ops.kitfile import open_kit, read_metadata

    with open_kit(kit) as stream:
        return [f.sha256 for f in read_metadata(stream, Caps()).manifest.frames]


def test_patch_result_is_byte_identical_to_full_build(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, delta, full = release_pair
    new = kit_env.root / "new.kit.tar.zst"
    code, document = run_json("patch", base, delta, "--key", kit_env.ed_pub, "--out", new)
    assert code == 0
    # Frames: this small kit's one group frame changed, so it comes from the delta: carried as the contents that
    # changed (the default content delta), it is made again.
    assert (document["copiedFromBase"], document["copiedFromDelta"], document["rebuilt"]) == (0, 0, 1)
    assert new.read_bytes() == full.read_bytes()
    assert run_kit("verify", new, "--key", kit_env.ed_pub).exit_code == 0


def test_patch_in_place_replaces_base(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, delta, full = release_pair
    assert run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--in-place").exit_code == 0
    assert base.read_bytes() == full.read_bytes()
    assert not list(base.parent.glob(f".{base.name}.*"))


def test_mix_and_match_is_refused(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, delta, full = release_pair
    result = run_kit("patch", full, delta, "--key", kit_env.ed_pub, "--out", kit_env.root / "x.kit.tar.zst")
    assert result.exit_code == 6
    assert "this delta applies to the kit whose manifest has SHA-256" in result.stderr
    assert not (kit_env.root / "x.kit.tar.zst").exists()


def test_delta_that_does_not_grow_the_sequence_is_refused(kit_env: KitEnv) -> None:
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base, "1700000000")
    _next_release(kit_env, sequence=1)
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "1700000000", "--delta-from", base)
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--out", kit_env.root / "n.kit.tar.zst")
    assert result.exit_code == 6 and "refusing a downgrade" in result.stderr
    allowed = run_kit(
        "patch", base, delta, "--key", kit_env.ed_pub, "--out", kit_env.root / "n.kit.tar.zst", "--allow-downgrade"
    )
    assert allowed.exit_code == 0


def test_expired_delta_is_refused(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, delta, _ = release_pair
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--in-place", "--now", "2100-01-01")
    assert result.exit_code == 6


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_delta_leaves_base_untouched(
    kit_env: KitEnv, release_pair: tuple[Path, Path, Path], damage: str
) -> None:
    base, delta, _ = release_pair
    before = hashlib.sha256(base.read_bytes()).hexdigest()
    data = bytearray(delta.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[300] ^= 0xFF
    delta.write_bytes(bytes(data))
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--in-place")
    assert result.exit_code in (4, 5)
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before
    assert not list(base.parent.glob(f".{base.name}.*.part"))


def _kit_cli(*args: object, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`kit` in a child process; with ``fault``, KIT_FAULT ends it at that named point as SIGKILL would."""
    env = {k: v for k, v in os.environ.items() if k != "KIT_FAULT"}
    if fault:
        env["KIT_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def test_kill_during_in_place_patch_always_leaves_old_or_new(
    kit_env: KitEnv, release_pair: tuple[Path, Path, Path]
) -> None:
    """A kill after each member written and after the final rename: the name holds the old or the new kit, never
    a partial one, and a rerun converges and leaves nothing behind."""
    base, delta, full = release_pair
    old = base.read_bytes()
    command = ["patch", base, delta, "--key", kit_env.ed_pub, "--in-place"]
    from kitbuilder.archive.reader import Caps
    from kitbuilder.ops.kitfile import open_kit, read_metadata

    with open_kit(full) as stream:
        metadata = len(read_metadata(stream, Caps()).members)
    # After the payload frames are copied, after each metadata frame written, after the final rename.
    points = ["patch-file-payload", *(f"patch-file-member:{n}" for n in range(1, metadata + 1)), "patch-file-renamed"]
    for fault in points:
        base.write_bytes(old)
        killed = _kit_cli(*command, fault=fault)
        assert killed.returncode == 137, (fault, killed.stderr)
        assert base.read_bytes() in (old, full.read_bytes()), fault
        rerun = run_kit(*command)
        assert rerun.exit_code == 0, (fault, rerun.stderr)
        assert base.read_bytes() == full.read_bytes(), fault
        assert not list(base.parent.glob(f".{base.name}.*")), f"{fault}: leftovers are cleaned by the next run"


def _extract(kit: Path, target: Path) -> None:
    target.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}'", shell=True, check=True)


def _tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_patch_installed_directory_matches_extracted_new_kit(
    kit_env: KitEnv, release_pair: tuple[Path, Path, Path]
) -> None:
    base, delta, full = release_pair
    installed = kit_env.root / "installed"
    _extract(base, installed)
    code, document = run_json("patch", installed, delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 0, document
    assert (document["written"], document["removed"]) == (3, 1)  # two docs and sbom/kit.cdx.json
    expected = kit_env.root / "expected"
    _extract(full, expected)
    assert _tree(installed) == _tree(expected)
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=installed, check=True)


def test_patch_directory_rehashes_reused_files(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    """A file the new kit keeps is re-hashed, not trusted: edited since it was installed, it is replaced by the
    signed content (here the delta carries it: this small kit's one group frame changed, shipped verbatim; a
    content delta does not carry it: tests/integration/test_content_delta.py)."""
    base, _, full = release_pair
    delta = kit_env.root / "verbatim.kit.tar.zst"
    _build(kit_env, delta, "1700086400", "--delta-from", base, "--delta-frames", "verbatim")
    installed = kit_env.root / "installed"
    _extract(base, installed)
    (installed / "docs/operator/blob.bin").write_bytes(b"tampered after install")
    code, document = run_json("patch", installed, delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 0, document
    expected = kit_env.root / "expected"
    _extract(full, expected)
    assert _tree(installed) == _tree(expected)


def test_kill_during_directory_patch_rolls_forward(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    """A kill after staging, after the commit and after each journal step: until the journal exists the installed
    files are untouched; after it, the rerun rolls forward; every rerun converges to the new kit."""
    base, delta, full = release_pair
    expected_dir = kit_env.root / "expected"
    _extract(full, expected_dir)
    expected = _tree(expected_dir)
    original_dir = kit_env.root / "original"
    _extract(base, original_dir)
    original = _tree(original_dir)
    probe = kit_env.root / "probe"
    _extract(base, probe)
    command = ["patch", None, delta, "--key", kit_env.ed_pub, "--in-place"]
    assert _kit_cli(*command[:1], probe, *command[2:], fault="patch-dir-committed").returncode == 137
    steps = len(json.loads((probe / ".kit-patch/journal.json").read_bytes())["operations"])
    faults = ["patch-dir-staged", "patch-dir-committed", *(f"patch-dir-after-op:{n}" for n in range(1, steps + 1))]
    for number, fault in enumerate(faults):
        installed = kit_env.root / f"installed-{number}"
        _extract(base, installed)
        killed = _kit_cli(*command[:1], installed, *command[2:], fault=fault)
        assert killed.returncode == 137, (fault, killed.stderr)
        tree = {k: v for k, v in _tree(installed).items() if not k.startswith(".kit-patch/")}
        if not (installed / ".kit-patch/journal.json").exists():
            assert tree in (original, expected), fault
        code, document = run_json(*command[:1], installed, *command[2:])
        assert code == 0, (fault, document)
        assert document["rolledForward"] == fault.startswith(("patch-dir-after", "patch-dir-comm"))
        assert _tree(installed) == expected, fault
