"""Metadata members over several frames (docs/format.md §0.2, §0.9): the file list and SHA256SUMS of a kit of many
files are a header frame and data frames, read frame by frame; every check still holds on them.

The crafted kits use the writer's ``metadata_chunk`` hook (a 512-byte data frame instead of CHUNK), so a list of a
few files spans many frames and the tests stay small; one kit is built by ``kit build`` itself with a file list past
LARGE, and checked with stock zstd and tar too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import layout, reader, zstdframes
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import SHA256SUMS
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories import filelist_kits
from tests.factories.cli import run_kit
from tests.factories.filelist_kits import crafted_list, lines
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.measure import kit_peak
from tests.integration.test_hostile_format2_filelist import CASES

CHUNK = 512
MiB = 1 << 20


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(filelist_kits, "METADATA_CHUNK", CHUNK)
    yield


def _many(count: int = 40) -> list[tuple[str, bytes]]:
    return [(f"docs/section-{n:03d}/page-{n:05d}.md", b"page %d\n" % n) for n in range(count)]


def _refused(result: Any, code: int, word: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output


def _spans(kit: Path, caps: Caps | None = None) -> dict[str, MemberSpan]:
    with open_kit(kit) as stream:
        index = read_metadata(stream, caps or Caps()).location.index
    return {span.path: span for span in index.spans()}


def _index(data: bytes) -> tuple[int, dict[str, Any]]:
    offset = int.from_bytes(data[-8:], "little")
    return offset, json.loads(data[offset + 8 : len(data) - zstdframes.FOOTER_SIZE])


def _with_index(data: bytes, offset: int, index: dict[str, Any], body: bytes) -> bytes:
    """``body`` (the frames) with ``index`` written after it (same frames), and a footer pointing at it."""
    encoded = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    return body + zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, encoded) + zstdframes.footer_frame(len(body))


def test_a_file_list_over_many_frames_verifies_inspects_and_reads_back(
    tmp_path: Path, trusted: Path, small_chunks: None
) -> None:
    kit = tmp_path / "many.kit.tar.zst"
    kit.write_bytes(crafted_list(files=_many()))
    spans = _spans(kit)
    listed, sums = spans[FILE_LIST], spans[SHA256SUMS]
    # A header frame of its own, then data frames of 512 bytes: the layout of a large member.
    assert listed.at == 0 and listed.frames[0].size == layout.BLOCK and len(listed.frames) > 8
    assert all(frame.size == CHUNK for frame in listed.frames[1:-1])
    assert sums.frames[0].size == layout.BLOCK and len(sums.frames) > 3
    assert run_kit("verify", kit, "--key", trusted, "--product", "demo").exit_code == 0
    report = run_kit("inspect", kit, "--json", "--files")
    assert report.exit_code == 0, report.output
    assert [f["path"] for f in json.loads(report.stdout)["files"]] == [p for p, _ in _many()]
    with open_kit(kit) as stream:
        data = reader.read_member(stream, listed, Caps())
    assert len(data.splitlines()) == 40 and hashlib.sha256(data).hexdigest() == listed.sha256


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_file_list_defect_is_refused_when_the_list_spans_frames(
    name: str, tmp_path: Path, trusted: Path, small_chunks: None
) -> None:
    """The one-frame cases of test_hostile_format2_filelist, with the list read frame by frame."""
    make, code, word = CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(make())
    before = sorted(tmp_path.rglob("*"))
    _refused(run_kit("verify", kit, "--key", trusted, "--product", "demo"), code, word)
    assert sorted(tmp_path.rglob("*")) == before


def _list_frames(data: bytes) -> list[int]:
    """The numbers of the file list's data frames in a crafted kit."""
    _, index = _index(data)
    member = next(m for m in index["members"] if m["path"] == FILE_LIST)
    first = member["frame"] + 1
    left = layout.padded(member["size"])
    numbers = []
    while left > 0:
        numbers.append(first)
        left -= index["frames"][first]["size"]
        first += 1
    return numbers


def test_a_chunk_frame_of_the_list_altered_is_refused(tmp_path: Path, trusted: Path, small_chunks: None) -> None:
    data = bytearray(crafted_list(files=_many()))
    _, index = _index(bytes(data))
    frame = index["frames"][_list_frames(bytes(data))[3]]
    data[frame["offset"] + frame["length"] // 2] ^= 0x40
    kit = tmp_path / "altered.kit.tar.zst"
    kit.write_bytes(bytes(data))
    _refused(run_kit("verify", kit, "--key", trusted), 4, "compressed bytes differ")


def test_the_list_chunk_frames_reordered_are_refused(tmp_path: Path, trusted: Path, small_chunks: None) -> None:
    """Two data frames of the list swapped in the file, and the index rewritten to match: every frame reads as
    the index says, but the list's content is not the one signed."""
    data = crafted_list(files=_many())
    offset, index = _index(data)
    first, second = _list_frames(data)[2:4]
    frames = index["frames"]
    pieces = [data[f["offset"] : f["offset"] + f["length"]] for f in frames]
    pieces[first], pieces[second] = pieces[second], pieces[first]
    frames[first], frames[second] = frames[second], frames[first]
    position = 0
    for frame, piece in zip(frames, pieces, strict=True):
        frame["offset"] = position
        position += len(piece)
    assert position == offset
    kit = tmp_path / "reordered.kit.tar.zst"
    kit.write_bytes(_with_index(data, offset, index, b"".join(pieces)))
    _refused(run_kit("verify", kit, "--key", trusted), 4, FILE_LIST)


def test_the_list_cut_short_is_refused(tmp_path: Path, trusted: Path, small_chunks: None) -> None:
    """After signing, the list loses its last frames (someone without the key): its size is not the signed one."""
    kit = tmp_path / "short.kit.tar.zst"
    kit.write_bytes(
        crafted_list(
            files=_many(), after_signing=lambda members: members.update({FILE_LIST: members[FILE_LIST][:1024]})
        )
    )
    _refused(run_kit("verify", kit, "--key", trusted), 5, "fileList.size")


def test_a_list_longer_than_its_signed_count_is_refused(tmp_path: Path, trusted: Path, small_chunks: None) -> None:
    """A hostile signer lists one file more than fileList.count says; the extra line lies in a later frame."""
    kit = tmp_path / "longer.kit.tar.zst"
    kit.write_bytes(crafted_list(files=_many(), list_hook=lines(lambda ls: [*ls, ls[-1]])))
    _refused(run_kit("verify", kit, "--key", trusted), 5, "more than the 40 lines")


def test_a_line_longer_than_any_line_is_refused_before_it_ends(
    tmp_path: Path, trusted: Path, small_chunks: None
) -> None:
    """A signed list whose second line runs on for 4 KiB without a newline: refused at 615 bytes, by line."""
    kit = tmp_path / "endless.kit.tar.zst"
    kit.write_bytes(crafted_list(files=_many(), list_hook=lines(lambda ls: [ls[0], ls[1] + b" " * 4096, *ls[2:]])))
    _refused(run_kit("verify", kit, "--key", trusted), 5, "line 2: longer than 615 bytes")


def test_a_list_over_its_count_cap_is_refused_before_it_is_read(
    tmp_path: Path, trusted: Path, small_chunks: None
) -> None:
    """fileList.count bounds the list (615 bytes a line): a hostile signer who claims one file for a list of 40
    is refused on the sizes alone, before any of the list is decoded."""
    kit = tmp_path / "capped.kit.tar.zst"
    kit.write_bytes(crafted_list(files=_many(), ref_hook=lambda ref: ref.update(count=1)))
    _refused(run_kit("verify", kit, "--key", trusted), 5, "exceeds the metadata cap")


def test_a_built_kit_with_a_list_past_large_is_several_frames_and_stock_tools_read_it(tmp_path: Path) -> None:
    """kit build itself: a file list over LARGE (1 MiB) is written as a header frame and a data frame, verifies,
    and `zstd -dc | tar -x` extracts it whole, the bytes fileList signs."""
    source = tmp_path / "src"
    name = "x" * 90
    for number in range(4200):
        path = source / f"d{number % 50:02d}" / f"{name}{number:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d\n" % number)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        'apiVersion: kitbuilder/v1\nname: big-list\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\n'
        "product: demo\ndocs:\n  - id: tree\n    source: src\n"
    )
    key, public = write_pair(RELEASE, tmp_path / "release")
    kit = tmp_path / "big-list.kit.tar.zst"
    built = run_kit("build", spec, "--key", key, "--out", kit, "-q")
    assert built.exit_code == 0, built.output
    spans = _spans(kit)
    listed = spans[FILE_LIST]
    assert listed.size > layout.LARGE and [f.size for f in listed.frames[:1]] == [layout.BLOCK]
    assert len(listed.frames) == 2
    assert run_kit("verify", kit, "--key", public).exit_code == 0
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"zstd -dcq '{kit}' | tar -x -C '{out}'", shell=True, check=True)
    assert hashlib.sha256((out / FILE_LIST).read_bytes()).hexdigest() == listed.sha256
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=out, check=True)


def test_verify_of_a_many_frame_list_holds_no_copy_of_it(tmp_path: Path, trusted: Path) -> None:
    """A list of 60,000 files (about 12 MiB, three CHUNK frames) is parsed frame by frame into a compact table, and
    the scan makes each member's span as it reaches its frame: verify's peak grows by well under the list's bytes
    plus an entry object and a span per file (about 1.5 KiB a file before), the scan's fixed in-flight budget
    (32 MiB of frames) included."""
    small = tmp_path / "small.kit.tar.zst"
    small.write_bytes(crafted_list(files=[(f"docs/d{n % 100:02d}/file-{n:06d}.txt", b"") for n in range(600)]))
    files = [(f"docs/d{n % 100:02d}/file-{n:06d}.txt", b"") for n in range(60_000)]
    kit = tmp_path / "sixty.kit.tar.zst"
    kit.write_bytes(crafted_list(files=files))
    assert len(_spans(kit, Caps(max_members=60_000))[FILE_LIST].frames) >= 3
    code, stderr, base = kit_peak("verify", small, "--key", trusted, "--no-state", runs=3)
    assert code == 0, stderr
    code, stderr, peak = kit_peak("verify", kit, "--key", trusted, "--max-members", "60000", "--no-state", runs=3)
    assert code == 0, stderr
    assert peak - base < 48 * MiB, f"peak RSS {base // MiB} MiB for 600 files, {peak // MiB} MiB for 60,000"
