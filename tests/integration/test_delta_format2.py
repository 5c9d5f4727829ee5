"""Format-2 deltas and patches on kits big enough to have several groups and a chunked file.

What is asserted: a patched kit is the full build's bytes (whatever --threads built either), a delta ships
frames in proportion to the change (one changed small file: about one group; a renamed big file: its header
frame; one changed chunk: that chunk), directory mode rebuilds a partly changed big file from the installed
one and the delta's chunk, and hostile deltas and bases are refused with nothing written.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kitbuilder.archive import layout
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import Manifest
from kitbuilder.ops.delta import FRAMES_DIR
from kitbuilder.ops.frame_reuse import FrameMap
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_json, run_kit

BIG = 9 << 20  # three chunk frames: 4 + 4 + 1 MiB
SMALL_FILES = 90  # 16 KiB each: a few groups


def _grow_tree(kit_env: KitEnv) -> None:
    docs = kit_env.root / "src/docs"
    (docs / "big.bin").write_bytes(random.Random(7).randbytes(BIG))
    notes = docs / "notes"
    notes.mkdir()
    for number in range(SMALL_FILES):
        line = f"note {number}: verify, apply, check the report; nothing here is secret. "
        (notes / f"{number:03d}.md").write_text(line * (16384 // len(line)))


def _build(kit_env: KitEnv, out: Path, *extra: object) -> None:
    # One SOURCE_DATE_EPOCH: the metadata (created, provenance times) is then the same in every build of a release.
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, *extra, env={"SOURCE_DATE_EPOCH": "1767225600"}
    )
    assert result.exit_code == 0, result.output


def _manifest(kit: Path) -> Manifest:
    with open_kit(kit) as stream:
        return read_metadata(stream, Caps()).manifest


@dataclass
class Release:
    base: Path
    full: Path
    delta: Path


def _release(kit_env: KitEnv, change: str, *, threads: tuple[str, str, str] = ("2", "2", "2")) -> Release:
    """Base (sequence 1), then one kind of change, then the full build and the delta of sequence 2."""
    _grow_tree(kit_env)
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base, "--threads", threads[0])
    docs = kit_env.root / "src/docs"
    if change == "small":
        (docs / "notes/041.md").write_text("rewritten\n")
    elif change == "rename":
        (docs / "big.bin").rename(docs / "big-v2.bin")
    elif change == "chunk":
        data = bytearray((docs / "big.bin").read_bytes())
        data[layout.CHUNK + 100 : layout.CHUNK + 200] = bytes(100)  # inside chunk 1 only
        (docs / "big.bin").write_bytes(bytes(data))
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full = kit_env.root / "full.kit.tar.zst"
    _build(kit_env, full, "--threads", threads[1])
    delta = kit_env.root / "delta.kit.tar.zst"
    # Verbatim frames: these tests are about which frames a delta ships (content deltas: test_content_delta.py).
    _build(kit_env, delta, "--delta-from", base, "--threads", threads[2], "--delta-frames", "verbatim")
    return Release(base, full, delta)


def _shipped(release: Release) -> list[tuple[str, str, int]]:
    """What the delta carries: for each target frame it ships, (kind, first member's path, decompressed size)."""
    target = _manifest(release.full)
    frames = FrameMap(target, what="full")
    number_of = {frame.sha256: number for number, frame in enumerate(target.frames)}
    carried = [f for f in _manifest(release.delta).files if not f.path.startswith("delta/target/")]
    assert all(f.path.startswith(f"{FRAMES_DIR}/") for f in carried)  # frames by digest, never target paths
    shipped = []
    for entry in carried:
        number = number_of[entry.path.rsplit("/", 1)[1]]
        role = frames.roles[number]
        assert role is not None and entry.size == target.frames[number].size
        shipped.append((role.kind, role.files[0].path, entry.size))
    return shipped


def test_one_small_file_changed_ships_about_one_group(kit_env: KitEnv) -> None:
    release = _release(kit_env, "small")
    shipped = _shipped(release)
    target = _manifest(release.full)
    # The group holding notes/041.md and the group holding the kit's SBOM (it lists every digest): no frame of
    # big.bin, a small part of the kit.
    assert 1 <= len(shipped) <= 2 and {kind for kind, _, _ in shipped} == {"group"}, shipped
    assert all(size < layout.GROUP_MAX + layout.LARGE + layout.BLOCK for _, _, size in shipped)
    assert release.delta.stat().st_size < release.full.stat().st_size / 8
    assert len(target.frames) > 6
    code, document = run_json(
        "build",
        kit_env.spec,
        "--key",
        kit_env.ed_key,
        "--delta-from",
        release.base,
        "--out",
        kit_env.root / "again.kit.tar.zst",
    )
    assert code == 0 and document["changed"] == ["docs/operator/notes/041.md", "sbom/kit.cdx.json"], document
    new = kit_env.root / "new.kit.tar.zst"
    code, document = run_json("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", new)
    assert code == 0, document
    assert document["copiedFromDelta"] == len(shipped)
    assert document["copiedFromBase"] == len(target.frames) - len(shipped)
    assert new.read_bytes() == release.full.read_bytes()
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    code, document = run_json("patch", installed, release.delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 0, document
    assert document["written"] == 2  # the changed note and the SBOM, cut out of the groups the delta carries
    expected = kit_env.root / "expected"
    _extract(release.full, expected)
    assert _tree(installed) == _tree(expected)


def test_renamed_big_file_ships_only_its_header_frame(kit_env: KitEnv) -> None:
    release = _release(kit_env, "rename")
    shipped = _shipped(release)
    # The new path's 512-byte tar header, and the SBOM's group (it names the new path); no chunk.
    assert ("header", "docs/operator/big-v2.bin", layout.BLOCK) in shipped
    assert {kind for kind, _, _ in shipped} <= {"header", "group"} and len(shipped) <= 3, shipped
    assert release.delta.stat().st_size < 200_000
    new = kit_env.root / "new.kit.tar.zst"
    assert run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", new).exit_code == 0
    assert new.read_bytes() == release.full.read_bytes()
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    assert run_kit("patch", installed, release.delta, "--key", kit_env.ed_pub, "--in-place").exit_code == 0
    assert (installed / "docs/operator/big-v2.bin").read_bytes() == (kit_env.root / "src/docs/big-v2.bin").read_bytes()
    assert not (installed / "docs/operator/big.bin").exists()


def _extract(kit: Path, target: Path) -> None:
    target.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}'", shell=True, check=True)


def _tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_one_changed_chunk_ships_that_chunk_and_both_modes_rebuild_the_file(kit_env: KitEnv) -> None:
    release = _release(kit_env, "chunk")
    shipped = _shipped(release)
    # Chunk 1 of big.bin (its header frame is unchanged) and the SBOM's group (big.bin's digest changed).
    assert ("chunk", "docs/operator/big.bin", layout.CHUNK) in shipped
    assert sorted(kind for kind, _, _ in shipped) == ["chunk", "group"], shipped
    assert release.delta.stat().st_size < layout.CHUNK + 300_000
    new = kit_env.root / "new.kit.tar.zst"
    assert run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", new).exit_code == 0
    assert new.read_bytes() == release.full.read_bytes()
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    code, document = run_json("patch", installed, release.delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 0, document
    expected = kit_env.root / "expected"
    _extract(release.full, expected)
    assert _tree(installed) == _tree(expected)


def test_directory_mode_rehashes_the_installed_chunks_it_reuses(kit_env: KitEnv) -> None:
    release = _release(kit_env, "chunk")
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    big = installed / "docs/operator/big.bin"
    data = bytearray(big.read_bytes())
    data[10] ^= 1  # chunk 0, which the patch takes from the installed file
    big.write_bytes(bytes(data))
    code, document = run_json("patch", installed, release.delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 4
    assert (
        "docs/operator/big.bin: neither the delta nor the installed kit holds its content"
        in (document["error"]["message"])
    )
    assert not (installed / ".kit-patch").exists()
    assert big.read_bytes() == bytes(data)


@pytest.mark.parametrize("threads", [("1", "3", "2"), ("0", "2", "1")])
def test_patched_equals_full_build_across_thread_counts(kit_env: KitEnv, threads: tuple[str, str, str]) -> None:
    release = _release(kit_env, "small", threads=threads)
    other = kit_env.root / "full-other.kit.tar.zst"
    _build(kit_env, other, "--threads", threads[0])
    assert other.read_bytes() == release.full.read_bytes()
    new = kit_env.root / "new.kit.tar.zst"
    assert run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", new).exit_code == 0
    assert new.read_bytes() == release.full.read_bytes()


def test_diff_says_what_a_delta_would_ship(kit_env: KitEnv) -> None:
    release = _release(kit_env, "chunk")
    code, document = run_json("diff", release.base, release.full, "--key", kit_env.ed_pub)
    assert code == 0, document
    frames = document["frames"]
    shipped = _manifest(release.delta).frames
    # The delta carries the new frames plus, for the chunk, a 512-byte header frame of its own.
    assert frames["newFrames"] == 2 and frames["shared"] == frames["new"] - 2
    assert frames["newBytes"] < sum(f.length for f in shipped)
    assert [f["path"] for f in document["files"]["changed"]] == ["docs/operator/big.bin", "sbom/kit.cdx.json"]
    from kitbuilder.core import schemas

    assert schemas.first_error("diff-report", document) is None
    text = run_kit("diff", release.base, release.full).output
    assert f"{frames['shared']} of {frames['new']} payload frames shared; a delta would ship 2 (" in text
