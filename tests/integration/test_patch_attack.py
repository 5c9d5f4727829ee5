"""Attacks on format-2 deltas, `kit patch` and `kit build --delta-from` with signed-but-lying inputs.

A signature says who made a kit, not that its frames hold what its manifest lists. Each case here is validly
signed by the trusted key and lies in its frames; the oracle is the one every kit command has: a documented
exit code, one line on stderr naming the file, nothing written under a final name, and never a signed output
that does not verify.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import FileEntry, FrameEntry
from kitbuilder.ops.delta import FRAMES_DIR
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_kit
from tests.factories.deltas import craft_delta
from tests.factories.hostile import RELEASE
from tests.factories.hostile2 import crafted2, small_files
from tests.factories.keys import write_pair
from tests.integration.test_delta_format2 import Release, _extract, _release

# kit build puts a docs component's files under docs/<id>/: the crafted base uses the same paths.
FILES = [("docs/" + path, data) for path, data in small_files()]
LIES = {"group": "docs/docs/a.md", "chunk": "docs/docs/z.bin"}


def _one_line(stderr: str, code: int, *needles: str) -> None:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert "Traceback" not in stderr
    kind = {2: "usage", 4: "integrity", 5: "archive"}[code]
    assert stderr.startswith(f"kit: {kind} error: "), stderr
    for needle in needles:
        assert needle in stderr, stderr


def _spec(root: Path, files: list[tuple[str, bytes]]) -> Path:
    source = root / "src"
    source.mkdir(parents=True)
    for path, data in files:
        (source / path.removeprefix("docs/docs/")).write_bytes(data)
    spec = root / "kit.yaml"
    spec.write_text(
        "apiVersion: kitbuilder/v1\nname: hostile-kit\nversion: '2.0.0'\nsequence: 2\n"
        "expires: '2099-01-01T00:00:00Z'\nproduct: demo\nchannel: stable\ndescription: target\n"
        "docs:\n  - id: docs\n    source: src\n"
    )
    return spec


@pytest.mark.parametrize("lie", sorted(LIES))
def test_delta_build_never_reuses_a_base_frame_that_does_not_hold_what_the_base_signed(
    tmp_path: Path, lie: str
) -> None:
    """A signed base lists a group frame (or a large file's chunk frames) under content they do not hold: the
    frame decodes to the file's old bytes while the manifest claims the new file's digest. `kit build
    --delta-from` matched the group by its signed member list (the chunk by its signed content digest) and
    copied the frame verbatim: it exited 0 and signed a full kit and a delta whose file does not have its signed
    digest (kit verify of the output: exit 4). A reused frame must decode to exactly the bytes this build would
    have compressed; a base that lies is refused [4], one line naming it, nothing written."""
    key, _ = write_pair(RELEASE, tmp_path / "release")
    path = LIES[lie]
    genuine = dict(FILES)[path]
    claimed = bytes([genuine[0] ^ 1]) + genuine[1:]

    def lie_about(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        for number, entry in enumerate(files):
            if entry.path == path:
                files[number] = dataclasses.replace(entry, sha256=hashlib.sha256(claimed).hexdigest())

    base = tmp_path / "base.kit.tar.zst"
    base.write_bytes(crafted2(FILES, signed_hook=lie_about).data)
    spec = _spec(tmp_path / "t", [(p, claimed if p == path else d) for p, d in FILES])
    out, full = tmp_path / "delta.kit.tar.zst", tmp_path / "full.kit.tar.zst"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_kit(
        "build", spec, "--key", key, "--level", "3", "--delta-from", base, "--out", out, "--full-out", full
    )
    assert result.exit_code == 4, result.output
    _one_line(result.stderr, 4, str(base), "does not hold what the base's signed manifest lists")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_delta_build_from_an_honest_crafted_base_still_reuses_its_frames(tmp_path: Path) -> None:
    """The check above costs nothing in reuse: with an honest base of the same files, the group and every chunk
    are copied (the full kit starts with the base's frames; only the SBOM's group is new), and both outputs
    verify."""
    key, public = write_pair(RELEASE, tmp_path / "release")
    base = tmp_path / "base.kit.tar.zst"
    base.write_bytes(crafted2(FILES).data)
    out, full = tmp_path / "delta.kit.tar.zst", tmp_path / "full.kit.tar.zst"
    result = run_kit(
        "build",
        _spec(tmp_path / "t", FILES),
        "--key",
        key,
        "--level",
        "3",
        "--delta-from",
        base,
        "--out",
        out,
        "--full-out",
        full,
    )
    assert result.exit_code == 0, result.output
    assert run_kit("verify", full, "--key", public).exit_code == 0
    assert run_kit("verify", out, "--key", public).exit_code == 0
    with open_kit(base) as stream:
        base_frames = read_metadata(stream, Caps()).manifest.frames
    with open_kit(full) as stream:
        full_frames = read_metadata(stream, Caps()).manifest.frames
    assert full_frames[: len(base_frames)] == base_frames  # the docs group, z.bin's header and both chunks


# ---------------------------------------------------------------------------------------------------------------
# kit patch on a kit file


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _release(kit_env, "chunk")


def _tree(root: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_in_place_patch_through_a_symbolic_link_is_refused(release: Release, kit_env: KitEnv) -> None:
    """`kit patch LINK DELTA --in-place` read the base through the link, then renamed the new kit over the link:
    exit 0 "patched", the link gone, and the kit it pointed to still the old release. --in-place replaces the
    kit file itself, so a link there is refused [2], one line naming it and where it points; nothing changes."""
    real = kit_env.root / "kits" / "base.kit.tar.zst"
    real.parent.mkdir()
    real.write_bytes(release.base.read_bytes())
    link = kit_env.root / "current.kit.tar.zst"
    link.symlink_to("kits/base.kit.tar.zst")
    before = _tree(kit_env.root)
    result = run_kit("patch", link, release.delta, "--key", kit_env.ed_pub, "--in-place")
    assert result.exit_code == 2, result.output
    _one_line(result.stderr, 2, str(link), "symbolic link", str(real))
    assert _tree(kit_env.root) == before
    result = run_kit("patch", real, release.delta, "--key", kit_env.ed_pub, "--in-place")
    assert result.exit_code == 0, result.output
    assert real.read_bytes() == release.full.read_bytes()


def test_patch_with_the_delta_on_another_filesystem(release: Release, kit_env: KitEnv) -> None:
    """The base beside the output (the kernel copies its frames) and the delta on another filesystem (the
    kernel refuses: EXDEV): the copier closed the descriptor its hash jobs for the base's frames still read
    through, and the patch failed "cannot read (Bad file descriptor)", exit 12. Now it is the full build's bytes."""
    other = kit_env.root / "usb"
    other.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(other)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs; this test needs root (CAP_SYS_ADMIN)")
    try:
        delta = other / "delta.kit.tar.zst"
        delta.write_bytes(release.delta.read_bytes())
        out = kit_env.root / "new.kit.tar.zst"
        result = run_kit("patch", release.base, delta, "--key", kit_env.ed_pub, "--out", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == release.full.read_bytes()
    finally:
        if subprocess.run(["umount", str(other)]).returncode != 0:
            subprocess.run(["umount", "-l", str(other)])


def test_delta_whose_frame_members_are_misnamed_is_refused_in_both_modes(release: Release, kit_env: KitEnv) -> None:
    """A signed delta carries each shipped frame under another frame's name (`delta/frames/<sha256>`). File mode
    took frames by the delta's frame table and ignored the names (exit 0), while directory mode took them by
    name and failed later with "neither the delta nor the installed kit holds its content": the two modes read
    one delta two ways. Now a member must be exactly the one frame its name gives, checked when the delta is
    opened: both modes refuse [4], one line naming the member, nothing written."""
    delta = craft_delta(kit_env.ed_key, release.base, release.full, kit_env.root / "bad.kit.tar.zst", misname=True)
    assert run_kit("verify", delta, "--key", kit_env.ed_pub, "--no-state").exit_code == 0  # signed, a valid kit
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 4, result.output
    _one_line(result.stderr, 4, f"{FRAMES_DIR}/", "does not hold the frame its name gives")
    assert not out.exists()
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    before = _tree(installed)
    result = run_kit("patch", installed, delta, "--key", kit_env.ed_pub, "--in-place")
    assert result.exit_code == 4, result.output
    _one_line(result.stderr, 4, f"{FRAMES_DIR}/", "does not hold the frame its name gives")
    assert _tree(installed) == before
