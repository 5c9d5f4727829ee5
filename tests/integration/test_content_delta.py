"""Content deltas (docs/delta.md, "Content deltas"): a delta carries changed small files as zstd patches against
the base file and new ones whole; kit patch rebuilds their group frames, byte-identical to the full build.

What is asserted: the delta is in proportion to the changed bytes (far smaller than shipping the groups), file
and directory mode give the full build's bytes and tree, a kill while frames are rebuilt leaves nothing and the
rerun converges, and each hostile signed content member (wrong content, a decompression bomb, a base content the
base lacks) and a rebuilt frame this zstd compresses otherwise are refused with one line and nothing written.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kitbuilder.archive import content_delta, framejobs
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import Manifest
from kitbuilder.ops import delta_content
from kitbuilder.ops.delta import DELTA_COMPONENT, FRAMES_DIR
from kitbuilder.ops.delta_content import ContentShipper, Shipped
from kitbuilder.ops.frame_reuse import BaseFrames, FrameMap
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.deltas import craft_delta

NOTES = 120  # 16 KiB each: several groups


def _note(number: int) -> str:
    line = f"note {number}: verify, apply, check the report; row {{}} of the shard. "
    return "".join(line.format(row) for row in range(16384 // len(line)))


def _grow_tree(kit_env: KitEnv) -> None:
    notes = kit_env.root / "src/docs/notes"
    notes.mkdir()
    for number in range(NOTES):
        (notes / f"{number:03d}.md").write_text(_note(number))


def _build(kit_env: KitEnv, out: Path, *extra: object) -> None:
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, *extra, env={"SOURCE_DATE_EPOCH": "1767225600"}
    )
    assert result.exit_code == 0, result.output


def _change(kit_env: KitEnv) -> None:
    """The next release: a few rows of three notes rewritten in place, one note grown, one new note."""
    notes = kit_env.root / "src/docs/notes"
    for number in (7, 41, 90):
        text = (notes / f"{number:03d}.md").read_text()
        (notes / f"{number:03d}.md").write_text(text.replace("row 100 ", "ROW 100 ").replace("row 101 ", "ROW 101 "))
    (notes / "060.md").write_text((notes / "060.md").read_text() + "one more line\n")
    (notes / "060b.md").write_text(random.Random(3).randbytes(3000).hex())
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))


@dataclass
class Release:
    kit_env: KitEnv
    base: Path
    full: Path
    delta: Path


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    _grow_tree(kit_env)
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    _change(kit_env)
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full)
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "--delta-from", base)
    return Release(kit_env, base, full, delta)


def _manifest(kit: Path) -> Manifest:
    with open_kit(kit) as stream:
        return read_metadata(stream, Caps()).manifest


def _cli(*args: object, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KIT_FAULT"}
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


def _extract(kit: Path, target: Path) -> Path:
    target.mkdir()
    subprocess.run(f"zstd -qdc '{kit}' | tar -x -C '{target}'", shell=True, check=True)
    return target


def _tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# ------------------------------------------------------------------------------------------------ honest deltas


def test_content_delta_is_in_proportion_to_the_change_and_patches_exactly(release: Release, tmp_path: Path) -> None:
    kit_env = release.kit_env
    verbatim = tmp_path / "verbatim.kit.tar.zst"
    _build(kit_env, verbatim, "--delta-from", release.base, "--delta-frames", "verbatim")
    delta = _manifest(release.delta)
    assert delta.delta is not None and delta.delta.frames == "content"
    assert _manifest(verbatim).delta.frames == "verbatim"  # type: ignore[union-attr]
    roles = {f.role for f in delta.files}
    patches = [f for f in delta.files if f.role == delta_content.PATCH_ROLE]
    whole = [f for f in delta.files if f.role == delta_content.FILE_ROLE]
    # The four changed notes travel as patches of a few hundred bytes, the new one whole; no group frame travels.
    assert len(patches) >= 4 and all(f.size < 1024 for f in patches), patches
    assert len(whole) >= 1
    assert not any(f.path.startswith(f"{FRAMES_DIR}/") for f in delta.files), roles
    # What each carries for the change (its payload; both carry the target's signed metadata besides): contents
    # and patches against the groups those files are in, compressed again.
    carried = sum(f.size for f in delta.files)
    carried_verbatim = sum(f.size for f in _manifest(verbatim).files)
    assert carried * 4 < carried_verbatim, (carried, carried_verbatim)
    # Inspect shows how the delta carries files (from the signed component totals).
    code, inspected = run_json("inspect", release.delta)
    assert code == 0
    by_role = next(c for c in inspected["components"] if c["id"] == DELTA_COMPONENT.id)["byRole"]
    assert by_role[delta_content.PATCH_ROLE]["files"] == len(patches)
    assert by_role[delta_content.FILE_ROLE]["files"] == len(whole)
    assert run_kit("verify", release.delta, "--key", kit_env.ed_pub, "--no-state").exit_code == 0
    # File mode: the full build's bytes, with nothing left beside it.
    out = tmp_path / "out"
    out.mkdir()
    result = _cli("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 0, result.stderr
    assert (out / "new.kit").read_bytes() == release.full.read_bytes()
    assert _files(out) == {"new.kit"}
    # Directory mode: the full build's tree.
    installed = _extract(release.base, tmp_path / "installed")
    result = _cli("patch", installed, release.delta, "--key", kit_env.ed_pub, "--no-state", "--in-place")
    assert result.returncode == 0, result.stderr
    assert _tree(installed) == _tree(_extract(release.full, tmp_path / "expected"))


def test_delta_frames_needs_delta_from(kit_env: KitEnv) -> None:
    result = run_kit(
        "build",
        kit_env.spec,
        "--key",
        kit_env.ed_key,
        "--out",
        kit_env.root / "k.kit.tar.zst",
        "--delta-frames",
        "verbatim",
    )
    assert result.exit_code == 2
    assert "--delta-frames" in result.output and not (kit_env.root / "k.kit.tar.zst").exists()


def test_kill_while_rebuilding_frames_leaves_nothing_and_the_rerun_converges(release: Release, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    command = ["patch", release.base, release.delta, "--key", release.kit_env.ed_pub, "--no-state", "--out"]
    # Frames are rebuilt into the new kit's temporary file (every payload frame here: the base holds none of the
    # target's), which the next run removes, with the lock.
    for fault in ("patch-file-rebuilt", "patch-file-rebuilt:2", "patch-file-payload"):
        killed = _cli(*command, out / "new.kit", fault=fault)
        assert killed.returncode == 137, (fault, killed.stderr)
        assert not (out / "new.kit").exists()
        assert not [name for name in _files(out) if "rebuild" in name]
    result = _cli(*command, out / "new.kit")
    assert result.returncode == 0, result.stderr
    assert (out / "new.kit").read_bytes() == release.full.read_bytes()
    assert _files(out) == {"new.kit"}


def test_directory_patch_refuses_a_changed_base_file_a_patch_needs(release: Release, tmp_path: Path) -> None:
    installed = _extract(release.base, tmp_path / "installed")
    (installed / "docs/operator/notes/041.md").write_text("edited by hand\n")
    before = _tree(installed)
    result = _cli("patch", installed, release.delta, "--key", release.kit_env.ed_pub, "--no-state", "--in-place")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, "docs/operator/notes/041.md", "full kit")
    assert _tree(installed) == before


# ---------------------------------------------------------------------------------------------- hostile deltas


class _Tampering(ContentShipper):
    """A shipper whose patches are rewritten by ``edit`` (name, bytes) before they are signed into the delta."""

    edit: Callable[[Shipped], Shipped] = staticmethod(lambda item: item)

    def members_for(self, number: int, decoded: bytes) -> list[Shipped] | None:
        members = super().members_for(number, decoded)
        if members is None:
            return None
        return [self.edit(item) if item.role == delta_content.PATCH_ROLE else item for item in members]


def _signed_delta(
    release: Release, out: Path, edit: Callable[[Shipped], Shipped], *, label: str | None = "content"
) -> Path:
    """The release's content delta, with each patch member edited, validly signed by the release key; its delta
    block says ``label`` as its ``frames`` (``None``: left out, as by an earlier release)."""
    made: list[_Tampering] = []

    def shipper(base: BaseFrames, frames: FrameMap, plan: delta_content.FilePlan, level: int) -> ContentShipper:
        made.append(_Tampering(base, frames, plan, level))
        made[-1].edit = edit  # type: ignore[method-assign]
        return made[-1]

    def labelled(info: dict[str, Any]) -> None:
        if label is None:
            del info["frames"]
        else:
            info["frames"] = label

    craft_delta(release.kit_env.ed_key, release.base, release.full, out, content=shipper, edit_info=labelled)
    assert made[0].patches > 0
    return out


def _refused_in_both_modes(release: Release, delta: Path, tmp_path: Path, *words: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pub = release.kit_env.ed_pub
    result = _cli("patch", release.base, delta, "--key", pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, *words)
    assert _files(out) == set()
    installed = _extract(release.base, tmp_path / "installed")
    before = _tree(installed)
    result = _cli("patch", installed, delta, "--key", pub, "--no-state", "--in-place")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, *words)
    assert _tree(installed) == before


def _source_of(item: Shipped) -> str:
    return item.name.split("/")[2]


def test_patch_decoding_to_other_content_is_refused(release: Release, tmp_path: Path) -> None:
    """A patch that decodes (against its base) to bytes of the signed size but another digest."""

    def wrong(item: Shipped) -> Shipped:
        size = zstandard.get_frame_parameters(item.data).content_size
        return Shipped(item.name, content_delta.encode(b"x" * size, b"y" * 100), item.role)

    delta = _signed_delta(release, tmp_path / "evil.kit.tar.zst", wrong)
    assert run_kit("verify", delta, "--key", release.kit_env.ed_pub, "--no-state").exit_code == 0  # signed, valid kit
    _refused_in_both_modes(release, delta, tmp_path, "decodes to bytes other than the target's signed content")


@pytest.mark.parametrize("declared", ["none", "more", "lie"])
def test_decompression_bomb_patch_is_refused_at_the_signed_size(
    release: Release, tmp_path: Path, declared: str
) -> None:
    """A patch that would inflate to 256 MiB: without a declared size, declaring it, or declaring the signed
    size while holding more. Never inflated past the signed size."""
    bomb = bytes(256 << 20)
    made = {
        "none": zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bomb),
        "more": zstandard.ZstdCompressor(level=1).compress(bomb),
    }
    del bomb

    def inflate(item: Shipped) -> Shipped:
        size = zstandard.get_frame_parameters(item.data).content_size
        if declared != "lie":
            return Shipped(item.name, made[declared], item.role)
        # A frame of 8 MiB whose 4-byte content size field is rewritten to the signed size.
        params = zstandard.ZstdCompressionParameters.from_level(1, window_log=20, write_content_size=1)
        frame = bytearray(zstandard.ZstdCompressor(compression_params=params).compress(bytes(8 << 20)))
        assert frame[4] >> 6 == 2 and not frame[4] & 0x20  # four size bytes after the window descriptor
        frame[6:10] = size.to_bytes(4, "little")
        return Shipped(item.name, bytes(frame), item.role)

    delta = _signed_delta(release, tmp_path / "bomb.kit.tar.zst", inflate)
    words = {"none": "declares no size", "more": f"declares {256 << 20} bytes", "lie": "does not decode"}[declared]
    _refused_in_both_modes(release, delta, tmp_path, words)


def test_patch_against_a_content_the_base_lacks_is_refused(release: Release, tmp_path: Path) -> None:
    def elsewhere(item: Shipped) -> Shipped:
        target = _source_of(item)
        return Shipped(delta_content.patch_name(target, "f" * 64), item.data, item.role)

    delta = _signed_delta(release, tmp_path / "evil.kit.tar.zst", elsewhere)
    _refused_in_both_modes(release, delta, tmp_path, "ffffffffffffffff", "not made for this base")


def test_rebuilt_frame_this_zstd_compresses_otherwise_is_refused(
    kit_env: KitEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target whose new group frames were compressed by another zstd (here: the build's compressor made at
    another level, standing in for another libzstd): kit patch rebuilds them, gets other bytes than the signed
    digest, and refuses with one line saying what to do instead; a verbatim delta of the same release patches."""
    _grow_tree(kit_env)
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    _change(kit_env)
    genuine = framejobs._compressor

    def other_zstd(level: int) -> object:
        return genuine(level + 2)

    monkeypatch.setattr(framejobs, "_compressor", other_zstd)
    delta = kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, delta, "--delta-from", base)
    verbatim = kit_env.root / "verbatim.kit.tar.zst"
    _build(kit_env, verbatim, "--delta-from", base, "--delta-frames", "verbatim")
    monkeypatch.setattr(framejobs, "_compressor", genuine)
    out = tmp_path / "out"
    out.mkdir()
    result = _cli("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, "target frame", "compresses to other bytes", "--delta-frames verbatim")
    assert _files(out) == set()
    result = _cli("patch", base, verbatim, "--key", kit_env.ed_pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 0, result.stderr


def test_a_removed_file_rebuilds_its_group_from_the_base_alone(kit_env: KitEnv, tmp_path: Path) -> None:
    """A group that only lost a file holds nothing new: the delta carries nothing for it, patch rebuilds it."""
    _grow_tree(kit_env)
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    (kit_env.root / "src/docs/notes/050.md").unlink()
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta = kit_env.root / "full.kit.tar.zst", kit_env.root / "delta.kit.tar.zst"
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    carried = [f.path for f in _manifest(delta).files if not f.path.startswith("delta/target/")]
    assert not any(path.startswith(f"{FRAMES_DIR}/") for path in carried), carried
    assert not any("notes/" in path for path in carried)
    out = tmp_path / "new.kit"
    result = _cli("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == full.read_bytes()
