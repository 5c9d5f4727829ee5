"""Format-2 frame tables and member maps that lie, through kit verify and kit inspect (docs/format.md §0.3).

Every case is a kit validly signed by the trusted key (or one whose signed part is untouched and whose
unsigned index lies), named after its defect. Each must be refused with its documented exit code, one line
on stderr naming what is wrong, and nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import zstdframes
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import FileEntry, FrameEntry
from tests.factories.cli import run_kit
from tests.factories.hostile import RELEASE
from tests.factories.hostile2 import Crafted2, crafted2, small_files
from tests.factories.keys import write_pair
from tests.integration.test_hostile_parse import assert_refused_cheaply, run_measured


def _index(change: Callable[[dict[str, Any]], None]) -> Callable[[], Crafted2]:
    return lambda: crafted2(index_hook=change)


def _signed(change: Callable[[list[FileEntry], list[FrameEntry]], None]) -> Callable[[], Crafted2]:
    return lambda: crafted2(signed_hook=change)


def _shift_frame(number: int, by: int) -> Callable[[dict[str, Any]], None]:
    def change(index: dict[str, Any]) -> None:
        index["frames"][number]["offset"] += by

    return change


def _member(path: str, **changes: int) -> Callable[[dict[str, Any]], None]:
    def change(index: dict[str, Any]) -> None:
        member = next(m for m in index["members"] if m["path"] == path)
        for key, by in changes.items():
            member[key] += by

    return change


def _signed_member(path: str, **changes: int) -> Callable[[list[FileEntry], list[FrameEntry]], None]:
    def change(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        import dataclasses

        number = next(n for n, f in enumerate(files) if f.path == path)
        item = files[number]
        files[number] = dataclasses.replace(item, **{k: getattr(item, k) + v for k, v in changes.items()})

    return change


def _signed_frame(number: int, **values: Any) -> Callable[[list[FileEntry], list[FrameEntry]], None]:
    def change(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        import dataclasses

        frame = frames[number]
        frames[number] = dataclasses.replace(
            frame, **{k: (getattr(frame, k) + v if isinstance(v, int) else v) for k, v in values.items()}
        )

    return change


def _set_frame(number: int | str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def change(index: dict[str, Any]) -> None:
        at = len(index["frames"]) - 2 if number == "last-metadata" else int(number)
        index["frames"][at].update(values)

    return change


def _drop_signed(path: str) -> Callable[[list[FileEntry], list[FrameEntry]], None]:
    def change(files: list[FileEntry], frames: list[FrameEntry]) -> None:
        files[:] = [f for f in files if f.path != path]

    return change


def _frame_holding_no_member() -> Crafted2:
    """Frame 0 (the group of a.md, b.sql, c.txt) written twice; the index lists both copies, the members once."""

    def raw(out: bytearray, index: dict[str, Any]) -> None:
        first = index["frames"][0]
        copy = bytes(out[first["offset"] : first["offset"] + first["length"]])
        out[first["length"] : first["length"]] = copy
        for frame in index["frames"][1:]:
            frame["offset"] += first["length"]
        index["frames"].insert(1, dict(first, offset=first["length"]))
        for member in index["members"]:
            if member["frame"] >= 1:
                member["frame"] += 1
        index["end"] += 1

    return crafted2(raw_hook=raw)


def _frames_list(count: int) -> Callable[[dict[str, Any]], None]:
    def change(index: dict[str, Any]) -> None:
        index["frames"] = index["frames"] + [dict(index["frames"][0]) for _ in range(count)]

    return change


CASES: dict[str, tuple[Callable[[], Crafted2], int, str]] = {
    # (the kit, exit code, a word the one-line error must hold)
    "frames_gapped": (_index(_shift_frame(1, 1)), 5, "frame 1"),
    "frames_overlapping": (_index(_shift_frame(2, -1)), 5, "frame 2"),
    "frames_not_tiling_to_the_index": (_index(_set_frame("last-metadata", length=1)), 5, "frame"),
    # The index places metadata members only (payload files are placed by the signed file list).
    "metadata_member_in_a_wrong_frame": (_index(_member("SHA256SUMS.sig", frame=1)), 5, "SHA256SUMS.sig"),
    "metadata_member_at_off_by_512": (_index(_member("manifest.json", at=512)), 5, "manifest.json"),
    "signed_member_at_off_by_512": (_signed(_signed_member("docs/c.txt", at=512)), 5, "docs/c.txt"),
    "signed_large_member_in_its_chunk_frame": (_signed(_signed_member("docs/z.bin", frame=1)), 5, "docs/z.bin"),
    "index_frame_sha256_lie": (_index(_set_frame(0, sha256="0" * 64)), 5, "frame 0"),
    "signed_frame_sha256_lie": (_signed(_signed_frame(0, sha256="0" * 64)), 4, "frame 0"),
    "signed_chunk_sha256_lie": (_signed(_signed_frame(3, sha256="f" * 64)), 4, "frame 3"),
    "metadata_frame_sha256_lie": (_index(_set_frame("last-metadata", sha256="0" * 64)), 4, "frame"),
    "signed_frame_size_lie": (_signed(_signed_frame(0, size=512)), 5, "frame"),
    "signed_frame_length_lie": (_signed(_signed_frame(0, length=1)), 5, "frame"),
    "group_frame_decodes_to_a_member_not_in_the_index": (_signed(_drop_signed("docs/c.txt")), 5, "docs/z.bin"),
    "frame_holding_no_member": (_frame_holding_no_member, 5, "frame"),
    "end_frame_not_last": (_index(lambda i: i.update(end=0)), 5, "end"),
    "frames_list_over_the_cap": (_index(_frames_list(1_400)), 5, "1152 frames"),
}


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def test_the_untouched_kit_verifies(tmp_path: Path, trusted: Path) -> None:
    kit = tmp_path / "good.kit.tar.zst"
    kit.write_bytes(crafted2().data)
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", sorted(CASES))
def test_lying_frame_map_is_refused(name: str, tmp_path: Path, trusted: Path) -> None:
    make, code, word = CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(make().data)
    before = sorted(tmp_path.rglob("*"))
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo", "--max-members", "64")
    assert result.exit_code == code, f"{name}: exit {result.exit_code}: {result.output}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_lying_index_is_refused_by_inspect_too(tmp_path: Path) -> None:
    """inspect reads the index and the metadata frames only: a map that does not tile is refused before that."""
    for name in ("frames_gapped", "metadata_member_at_off_by_512", "metadata_frame_sha256_lie"):
        make, code, _ = CASES[name]
        kit = tmp_path / f"{name}.kit.tar.zst"
        kit.write_bytes(make().data)
        result = run_kit("inspect", kit)
        assert result.exit_code == code, result.output
        assert result.stderr.count("\n") == 1, result.stderr


def test_huge_frames_list_is_refused_before_it_is_read(tmp_path: Path, trusted: Path) -> None:
    """An index far over what the bytes before it could hold is refused from its frame header alone."""
    kit = tmp_path / "huge.kit.tar.zst"
    kit.write_bytes(crafted2(files=small_files()[:1], index_hook=_frames_list(400_000)).data)
    result = run_kit("verify", kit, "--key", trusted, "--max-members", "10")
    assert result.exit_code == 5, result.output
    assert "exceeds the cap" in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("times", [1, 4])
def test_index_past_the_member_cap_is_refused_under_the_memory_bound(tmp_path: Path, trusted: Path, times: int) -> None:
    """A format-2 index listing the member cap (or four times it) of members in a few frames, no key needed:
    refused before it is parsed (its JSON values are counted on the bytes), under the RSS bound."""
    count = Caps().max_members * times
    members = [
        {"at": 512 * n, "frame": 0, "path": f"docs/d{n // 1000:06d}/f{n:06d}.md", "sha256": f"{n:064x}", "size": 0}
        for n in range(count)
    ]
    frames = [{"length": 9, "offset": 9 * n, "sha256": "0" * 64, "size": 512} for n in range(8)]
    index = {"end": 7, "format": "kitbuilder-index/v2", "frames": frames, "members": members}
    document = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()
    before = 1 << 20
    kit = tmp_path / "wide.kit.tar.zst"
    with kit.open("wb") as sink:
        sink.write(bytes(before))
        sink.write(zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, document))
        sink.write(zstdframes.footer_frame(before))
    assert_refused_cheaply(run_measured("verify", kit, "--key", trusted), "index")
