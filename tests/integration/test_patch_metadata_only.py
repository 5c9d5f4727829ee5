"""kit patch on a kit file checks the delta's signed metadata, not its whole payload (docs/delta.md, "Patching a kit
file"): every byte it takes from the delta is bound to a signed digest before it lands under the output's name.

Hostile deltas (a carried frame altered, a carried member's header frame altered, a ``delta/target/`` member
altered before or while it is copied, a delta cut short, a delta whose index frames do not tile) are refused with
one line and the documented exit code, and nothing is left under the output's name or beside it. The release has a
file list and SHA256SUMS past LARGE, so the target's metadata members are header frames and chunk frames, which a
patch copies from the delta verbatim (the only frames of the delta it copies that are not payload frames).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kitbuilder.archive import layout, zstdframes
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, SHA256SUMS
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.apply_runs import wait_for
from tests.factories.cli import run_kit
from tests.factories.deltas import craft_delta
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair

EPOCH = {"SOURCE_DATE_EPOCH": "1767225600"}
TARGET = "delta/target"


@dataclass(frozen=True)
class Release:
    base: Path
    full: Path
    delta: Path
    key: Path
    public: Path


def _spec(path: Path, sequence: int) -> None:
    path.write_text(
        f'apiVersion: kitbuilder/v1\nname: big-list\nversion: "{sequence}"\nsequence: {sequence}\n'
        'expires: "2099-01-01"\nproduct: demo\ndocs:\n  - id: tree\n    source: src\n'
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """6,000 files with long names (a file list past LARGE), then one of them changed."""
    root = tmp_path_factory.mktemp("release")
    name = "x" * 90
    for number in range(6000):
        path = root / "src" / f"d{number % 60:02d}" / f"{name}{number:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d\n" % number)
    key, public = write_pair(RELEASE, root / "release")
    spec = root / "spec.yaml"
    _spec(spec, 1)
    base, full, delta = root / "base.kit.tar.zst", root / "full.kit.tar.zst", root / "delta.kit.tar.zst"
    assert run_kit("build", spec, "--key", key, "--out", base, "-q", env=EPOCH).exit_code == 0
    (root / "src" / "d07" / f"{name}00007.txt").write_bytes(b"changed\n")
    _spec(spec, 2)
    assert run_kit("build", spec, "--key", key, "--out", full, "-q", env=EPOCH).exit_code == 0
    # Verbatim frames: these tests alter the frames a delta carries whole (content deltas: test_content_delta.py).
    built = run_kit(
        "build", spec, "--key", key, "--delta-from", base, "--delta-frames", "verbatim", "--out", delta, "-q", env=EPOCH
    )
    assert built.exit_code == 0, built.output
    return Release(base, full, delta, key, public)


def _spans(kit: Path) -> dict[str, MemberSpan]:
    with open_kit(kit) as stream:
        return {span.path: span for span in read_metadata(stream, Caps()).location.index.spans()}


def _altered(release: Release, tmp_path: Path, offset: int) -> Path:
    """A copy of the delta with one byte flipped at ``offset``."""
    data = bytearray(release.delta.read_bytes())
    data[offset] ^= 0x01
    altered = tmp_path / "altered.kit.tar.zst"
    altered.write_bytes(bytes(data))
    return altered


def _patch(release: Release, delta: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    command = [sys.executable, "-m", "kitbuilder.cli", "patch", release.base, delta, "--key", release.public]
    return subprocess.run(
        [*map(str, command), "--no-state", "--out", str(out)], capture_output=True, text=True, env=env
    )


def _refused(result: subprocess.CompletedProcess[str], code: int, out: Path, *words: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("kit: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")) in (
        [],
        [f".{out.name}.kit-lock"],
    )


def test_the_patch_is_the_full_build_with_the_target_metadata_copied_as_chunk_frames(
    release: Release, tmp_path: Path
) -> None:
    spans = _spans(release.delta)
    for name in (FILE_LIST, SHA256SUMS):
        assert spans[f"{TARGET}/{name}"].size > layout.LARGE and len(spans[f"{TARGET}/{name}"].frames) >= 2
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, release.delta, out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == release.full.read_bytes()


def test_a_carried_frame_altered_is_refused_and_nothing_is_written(release: Release, tmp_path: Path) -> None:
    carried = next(s for p, s in _spans(release.delta).items() if p.startswith("delta/frames/"))
    data = carried.frames[1]
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, _altered(release, tmp_path, data.offset + data.length // 2), out)
    _refused(result, 4, out, "compressed frames differ from their signed digest")


def test_a_carried_members_header_frame_altered_is_refused(release: Release, tmp_path: Path) -> None:
    """File mode never copies it; a full verify decodes it; so does file mode, before anything is written."""
    path, carried = next((p, s) for p, s in _spans(release.delta).items() if p.startswith("delta/frames/"))
    header = carried.frames[0]
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, _altered(release, tmp_path, header.offset + header.length - 6), out)
    _refused(result, 4, out, path, "differ from their signed digest")


@pytest.mark.parametrize("name", [FILE_LIST, SHA256SUMS, "manifest.json"])
def test_a_target_metadata_frame_altered_is_refused(release: Release, tmp_path: Path, name: str) -> None:
    frame = _spans(release.delta)[f"{TARGET}/{name}"].frames[-1]
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, _altered(release, tmp_path, frame.offset + frame.length // 2), out)
    _refused(result, 4, out, "differ from")


def test_a_target_chunk_frame_altered_while_it_is_copied_is_refused(release: Release, tmp_path: Path) -> None:
    """The file list's chunk frames are read (and checked) when the delta is opened, then copied into the new kit
    after the payload: the copy is hashed as it lies in the output, so bytes changed in between never land."""
    delta = tmp_path / "delta.kit.tar.zst"
    delta.write_bytes(release.delta.read_bytes())
    chunk = _spans(delta)[f"{TARGET}/{FILE_LIST}"].frames[1]
    out = tmp_path / "new.kit.tar.zst"
    gate = tmp_path / "gate"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_FAULT")}
    # Held after the first metadata member (SHA256SUMS) is written: the file list comes after it.
    env["KIT_FAULT_WAIT"] = f"patch-file-member:1:{gate}"
    command = [sys.executable, "-m", "kitbuilder.cli", "patch", release.base, delta, "--key", release.public]
    with subprocess.Popen(
        [*map(str, command), "--no-state", "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True
    ) as held:
        try:
            wait_for(Path(f"{gate}.waiting"), held)
            with delta.open("r+b") as handle:  # the same file the patch has open: it reads these bytes next
                handle.seek(chunk.offset + chunk.length // 2)
                byte = handle.read(1)
                handle.seek(-1, os.SEEK_CUR)
                handle.write(bytes([byte[0] ^ 0x01]))
        finally:
            gate.touch()
        _, stderr = held.communicate()
    _refused(subprocess.CompletedProcess([], held.returncode, "", stderr), 4, out, f"{TARGET}/{FILE_LIST}")


def test_a_delta_cut_short_is_refused(release: Release, tmp_path: Path) -> None:
    data = release.delta.read_bytes()
    for keep in (len(data) - 3, len(data) // 2):
        cut = tmp_path / f"cut-{keep}.kit.tar.zst"
        cut.write_bytes(data[:keep])
        out = tmp_path / "new.kit.tar.zst"
        result = _patch(release, cut, out)
        assert result.returncode == 5, result.stderr
        _refused(result, 5, out)


def test_a_delta_whose_index_frames_do_not_tile_is_refused(release: Release, tmp_path: Path) -> None:
    """The index is unsigned: a gap between two frames (every later offset moved by one) must not pass as the
    delta's layout, though no payload frame is decoded."""
    data = release.delta.read_bytes()
    offset = int.from_bytes(data[-8:], "little")
    index = data[offset + 8 : len(data) - zstdframes.FOOTER_SIZE]
    first = index.index(b'"offset":', index.index(b'"offset":') + 1)
    end = index.index(b",", first)
    moved = index[:first] + b'"offset":%d' % (int(index[first + 9 : end]) + 1) + index[end:]
    assert len(moved) in (len(index), len(index) + 1)
    body = data[:offset]
    crafted = tmp_path / "gap.kit.tar.zst"
    crafted.write_bytes(
        body + zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, moved) + zstdframes.footer_frame(len(body))
    )
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, crafted, out)
    _refused(result, 5, out, "frame")


def test_a_target_file_list_refused_while_the_payload_is_copied_leaves_nothing(
    release: Release, tmp_path: Path
) -> None:
    """The target's file list is read while worker threads copy the payload: a list that is not the one its signed
    manifest names stops the copy and the patch, with the list's error and nothing under the output's name."""
    with open_kit(release.full) as stream:
        target = json.loads(read_metadata(stream, Caps()).members[MANIFEST_JSON])
    record = dict(target["fileList"], sha256="0" * 64)
    delta = craft_delta(
        release.key, release.base, release.full, tmp_path / "d.kit.tar.zst", edit_target={"fileList": record}
    )
    out = tmp_path / "new.kit.tar.zst"
    result = _patch(release, delta, out)
    _refused(result, 4, out, f"{TARGET}/{FILE_LIST}", "fileList.sha256")
