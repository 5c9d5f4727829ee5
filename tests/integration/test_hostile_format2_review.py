"""Signed format-2 kits whose frames hold what the writer never writes, and the parallel scan's failure paths.

Each kit here is validly signed by the trusted key (a hostile signer, or a build host that was taken over):
the frame digests and the member map are signed, so only the frames' *decoded* bytes can lie. The oracle is
what `zstd -dc KIT | tar -x` would extract: verify exits 0 only if that is exactly the signed files; anything
else is refused with its documented exit code, one line on stderr, nothing written.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.ops.kitfile import located_index
from tests.factories.cli import KitEnv, run_kit
from tests.factories.hostile import RELEASE, pseudo_random
from tests.factories.hostile2 import SignedFrame, crafted2, crafted_frames, tar_member
from tests.factories.keys import write_pair
from tests.integration.test_hostile_parse import run_measured

MiB = 1 << 20
A = ("docs/a.md", b"# Runbook\n" * 40)
B = ("docs/b.sql", b"SELECT 1;\n" * 30)


def _zstd(data: bytes, *, content_size: bool = True) -> bytes:
    return bytes(zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=content_size).compress(data))


def _group(*members: tuple[str, bytes]) -> SignedFrame:
    """An honest group frame of ``members``."""
    raw = b"".join(tar_member(p, c) for p, c in members)
    listed, at = [], 0
    for path, content in members:
        listed.append((path, at, len(content), content))
        at += len(tar_member(path, content))
    return SignedFrame(_zstd(raw), len(raw), tuple(listed))


def _special_header(typeflag: bytes, name: str, size: int, linkname: str = "") -> bytes:
    """A ustar header of another type (a PAX/GNU extension, a link), checksum right, as tar would read it."""
    header = bytearray(tarfmt.build_header(name, size, 0))
    header[156:157] = typeflag
    header[157:257] = linkname.encode().ljust(100, b"\0")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header)


def _hidden_first(prefix: bytes) -> SignedFrame:
    """A group whose decoded bytes start with ``prefix`` (a non-member header and its data) before docs/a.md;
    the signer lists one member at byte 0 that spans the whole frame (so the map tiles)."""
    raw = prefix + tar_member(*A)
    content = raw[tarfmt.BLOCK :]
    return SignedFrame(_zstd(raw), len(raw), (("docs/x.md", 0, len(content), content),))


def _pax() -> SignedFrame:
    body = b"30 path=docs/elsewhere/evil.md\n"
    return _hidden_first(_special_header(b"x", "PaxHeaders/a.md", len(body)) + body.ljust(512, b"\0"))


def _gnu_longname() -> SignedFrame:
    body = b"docs/" + b"n" * 200 + b"\0"
    return _hidden_first(_special_header(b"L", "././@LongLink", len(body)) + body.ljust(512, b"\0"))


def _link(typeflag: bytes) -> SignedFrame:
    return _hidden_first(_special_header(typeflag, "docs/link", 0, linkname="/etc/passwd"))


def _second_end_of_archive() -> list[SignedFrame]:
    """docs/a.md, then 1024 zero bytes where the map says docs/b.sql's header is: tar stops there."""
    raw = tar_member(*A) + tarfmt.END_OF_ARCHIVE + tar_member(*B)
    at = len(tar_member(*A))
    content = raw[at + tarfmt.BLOCK :]
    return [SignedFrame(_zstd(raw), len(raw), ((A[0], 0, len(A[1]), A[1]), ("docs/b.sql", at, len(content), content)))]


def _two_frames(second: Callable[[bytes], bytes]) -> list[SignedFrame]:
    """One signed 'frame' that is a whole zstd frame of both members followed by ``second``."""
    raw = tar_member(*A) + tar_member(*B)
    honest = _group(A, B)
    return [SignedFrame(_zstd(raw) + second(raw), len(raw), honest.members)]


def _frame_pair_split() -> list[SignedFrame]:
    """docs/a.md and docs/b.sql as two zstd frames concatenated under one signed entry (zstd -dc reads both)."""
    honest = _group(A, B)
    return [SignedFrame(_zstd(tar_member(*A)) + _zstd(tar_member(*B)), honest.size, honest.members)]


def _content_size(declared: int) -> list[SignedFrame]:
    """A raw-block frame whose Frame_Content_Size is ``declared`` while it holds the group's bytes."""
    honest = _group(A, B)
    raw = tar_member(*A) + tar_member(*B)
    frame = zstdframes.RawFrameWriter(len(raw))
    data = frame.header + b"".join(frame.blocks(raw))
    data = data[:6] + struct.pack("<Q", declared) + data[14:]
    return [SignedFrame(data, honest.size, honest.members)]


FRAME_CASES: dict[str, tuple[Callable[[], list[SignedFrame]], int, str]] = {
    "pax_header_in_a_group": (lambda: [_pax()], 5, "PAX"),
    "gnu_longname_in_a_group": (lambda: [_gnu_longname()], 5, "GNU"),
    "hard_link_in_a_group": (lambda: [_link(b"1")], 5, "hard link"),
    "symlink_in_a_group": (lambda: [_link(b"2")], 5, "symbolic link"),
    "second_end_of_archive_in_a_group": (_second_end_of_archive, 5, "stream offset"),
    "two_zstd_frames_under_one_signed_entry": (_frame_pair_split, 5, "frame 0"),
    "a_second_frame_after_the_signed_one": (lambda: _two_frames(_zstd), 5, "frame 0"),
    "skippable_frame_inside_a_signed_frame": (
        lambda: _two_frames(lambda raw: zstdframes.skippable_frame(0x184D2A50, b"hidden")),
        5,
        "frame 0",
    ),
    "content_size_absent": (
        lambda: [SignedFrame(_zstd(tar_member(*A), content_size=False), len(tar_member(*A)), _group(A).members)],
        5,
        "content size",
    ),
    "content_size_lies_upwards": (lambda: _content_size(len(tar_member(*A)) * 2 + 512), 5, "frame 0"),
    "content_size_lies_downwards": (lambda: _content_size(512), 5, "frame 0"),
}


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def _refused(kit: Path, trusted: Path, code: int, word: str, *extra: str) -> None:
    before = sorted(kit.parent.rglob("*"))
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo", *extra)
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert sorted(kit.parent.rglob("*")) == before


def test_an_honest_crafted_kit_verifies_and_extracts_its_files(tmp_path: Path, trusted: Path) -> None:
    kit = tmp_path / "honest.kit.tar.zst"
    kit.write_bytes(crafted_frames([_group(A, B)]))
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo")
    assert result.exit_code == 0, result.output
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc {kit} | tar -x -C {out}", shell=True, check=True)
    assert (out / A[0]).read_bytes() == A[1] and (out / B[0]).read_bytes() == B[1]


@pytest.mark.parametrize("name", sorted(FRAME_CASES))
def test_signed_frame_holding_what_the_writer_never_writes_is_refused(name: str, tmp_path: Path, trusted: Path) -> None:
    make, code, word = FRAME_CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(crafted_frames(make()))
    _refused(kit, trusted, code, word)


@pytest.mark.parametrize(
    "name", ["pax_header_in_a_group", "symlink_in_a_group", "two_zstd_frames_under_one_signed_entry"]
)
def test_inspect_reading_a_member_of_such_a_kit_applies_the_same_checks(
    name: str, tmp_path: Path, trusted: Path
) -> None:
    make, code, word = FRAME_CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(crafted_frames(make()))
    from kitbuilder.archive import reader
    from kitbuilder.errors import KitError

    with kit.open("rb") as stream:
        index = located_index(stream, reader.Caps())
        for span in index.located():
            if span.path.startswith("docs/"):
                with pytest.raises(KitError) as caught:
                    reader.read_member(stream, span, reader.Caps())
                assert caught.value.exit_code == code, caught.value


def _corrupt_frames(*numbers: int) -> Callable[[bytearray, dict[str, object]], None]:
    def raw(out: bytearray, index: dict[str, object]) -> None:
        frames = index["frames"]
        assert isinstance(frames, list)
        for number in numbers:
            frame = frames[number]
            out[frame["offset"] + frame["length"] // 2] ^= 0xFF

    return raw


@pytest.mark.parametrize("numbers", [(2, 3), (3, 2), (1, 3), (0, 2, 3)])
def test_first_failing_frame_in_file_order_is_reported_whatever_the_workers_finish_first(
    numbers: tuple[int, ...], tmp_path: Path, trusted: Path
) -> None:
    kit = tmp_path / "corrupt.kit.tar.zst"
    kit.write_bytes(crafted2(raw_hook=_corrupt_frames(*numbers)).data)
    _refused(kit, trusted, 4, f"frame {min(numbers)} ")


def _payload_frames_signed_short() -> bytes:
    """The signer lists only the payload frames up to docs/z.bin's header frame; its two chunk frames follow
    outside the signed ``frames`` (their digests only in the unsigned index), then the metadata."""
    dropped: list[object] = []

    def signed(files: list[object], frames: list[object]) -> None:
        dropped.extend(frames[2:])
        del frames[2:]

    def index(document: dict[str, object]) -> None:
        listed = document["frames"]
        assert isinstance(listed, list)
        listed[2:2] = [f.to_json() for f in dropped]  # type: ignore[attr-defined]

    return crafted2(signed_hook=signed, index_hook=index).data  # type: ignore[arg-type]


def test_payload_frames_outside_the_signed_frames_are_refused(tmp_path: Path, trusted: Path) -> None:
    """docs/format.md §0.5: the manifest's ``frames`` are every frame before the first metadata frame. A large
    file whose data frames lie past them is read from frames nobody signed (and `kit patch`, which assembles the
    target from the signed frames, would write a kit without them)."""
    kit = tmp_path / "short.kit.tar.zst"
    kit.write_bytes(_payload_frames_signed_short())
    _refused(kit, trusted, 5, "docs/z.bin")


def test_frames_declaring_64_mib_each_cost_one_frame_of_memory(tmp_path: Path, trusted: Path) -> None:
    """Six signed frames of 64 MiB (the most a frame may decode to) from a few KiB each: verify decodes them on
    all cores but holds about one at a time, and hashes members in place (peak in a fresh child process)."""
    from kitbuilder.archive import layout

    frames = []
    for number in range(6):
        content = bytes(layout.MAX_FRAME_SIZE - 2 * tarfmt.BLOCK)
        raw = tar_member(f"docs/z{number}.bin", content)
        frames.append(SignedFrame(_zstd(raw), len(raw), ((f"docs/z{number}.bin", 0, len(content), content),)))
    kit = tmp_path / "wide.kit.tar.zst"
    kit.write_bytes(crafted_frames(frames))
    assert kit.stat().st_size < 1 * MiB
    result = run_measured("verify", kit, "--key", trusted, "--allow-downgrade")
    assert result["rc"] == 0, result
    assert result["maxrss"] < 150 * 1024, f"peak RSS {result['maxrss'] >> 10} MiB"


def _kit_child(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from kitbuilder.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.parametrize(("signal", "code"), [("TERM", 143), ("INT", 130)])
def test_signal_during_the_parallel_scan_stops_with_one_line(
    signal: str, code: int, tmp_path: Path, trusted: Path
) -> None:
    kit = tmp_path / "k.kit.tar.zst"
    kit.write_bytes(crafted2().data)
    result = _kit_child("verify", kit, "--key", trusted, env={"KIT_FAULT_SIGNAL": f"{signal}@scan-frame:3"})
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: interrupted"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.kit.tar.zst"]


@pytest.mark.parametrize(("signal", "code"), [("TERM", 143), ("INT", 130)])
def test_signal_during_a_parallel_build_leaves_nothing(signal: str, code: int, kit_env: KitEnv, tmp_path: Path) -> None:
    (kit_env.root / "src" / "docs" / "big.bin").write_bytes(pseudo_random(9 * MiB))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _kit_child(
        "build",
        kit_env.spec,
        "--key",
        kit_env.ed_key,
        "--out",
        out_dir / "k.kit.tar.zst",
        "--threads",
        "4",
        env={"KIT_FAULT_SIGNAL": f"{signal}@build-frame:4"},
    )
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: interrupted"), result.stderr
    # Both signals say the same: what was stopped, that nothing is left half-written, what to do.
    assert f"stopped by SIG{signal}; nothing was left under a final name, rerun" in result.stderr, result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("threads", ["257", "100000", "99999999999999999999"])
def test_thread_counts_past_the_cap_are_refused_before_anything_is_written(
    threads: str, kit_env: KitEnv, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out_dir / "k.kit.tar.zst", "--threads", threads
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--threads" in result.stderr, result.stderr
    assert list(out_dir.iterdir()) == []


def test_negative_thread_count_is_refused(kit_env: KitEnv, tmp_path: Path) -> None:
    out = tmp_path / "k.kit.tar.zst"
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, "--threads", "-3")
    assert result.exit_code == 2, result.output
    assert "--threads" in result.stderr and not out.exists()


def _edge_tree(root: Path) -> None:
    """Files at every size edge of the frame rules: empty, LARGE-513 .. LARGE+1, CHUNK-1 .. CHUNK+1, and runs of
    small files that fill a group to GROUP_MIN and GROUP_MAX exactly."""
    from kitbuilder.archive import layout

    docs = root / "src" / "docs"
    sizes = [0, 0, 1, 511, 512, 513]
    sizes += [
        layout.LARGE - 513,
        layout.LARGE - 512,
        layout.LARGE - 511,
        layout.LARGE - 1,
        layout.LARGE,
        layout.LARGE + 1,
    ]
    sizes += [layout.CHUNK - 1, layout.CHUNK, layout.CHUNK + 1, 2 * layout.CHUNK]
    for number, size in enumerate(sizes):
        (docs / f"edge{number:02d}.bin").write_bytes(pseudo_random(size)[:size] if size else b"")
    # Members of exactly GROUP_MIN/8 and GROUP_MAX/8 tar bytes: a group reaches each bound exactly.
    for number in range(16):
        size = layout.GROUP_MIN // 8 - tarfmt.BLOCK
        (docs / f"min{number:02d}.md").write_bytes(b"m" * size)
    for number in range(9):
        size = layout.GROUP_MAX // 8 - tarfmt.BLOCK
        (docs / f"max{number:02d}.md").write_bytes(bytes([65 + number]) * size)


def test_same_bytes_for_any_thread_count_at_every_size_edge(kit_env: KitEnv, tmp_path: Path) -> None:
    _edge_tree(kit_env.root)
    built = {}
    for threads in ("0", "1", "2", "4", "256"):
        out = tmp_path / f"t{threads}.kit.tar.zst"
        result = run_kit(
            "build",
            kit_env.spec,
            "--key",
            kit_env.ed_key,
            "--out",
            out,
            "--threads",
            threads,
            env={"SOURCE_DATE_EPOCH": "1700000000"},
        )
        assert result.exit_code == 0, result.output
        built[threads] = out.read_bytes()
    assert len(set(built.values())) == 1
    kit = tmp_path / "t0.kit.tar.zst"
    assert run_kit("verify", kit, "--key", kit_env.ed_pub).exit_code == 0
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc {kit} | tar -x -C {out}", shell=True, check=True)
    source = kit_env.root / "src" / "docs"
    for path in source.iterdir():
        assert (out / "docs" / "operator" / path.name).read_bytes() == path.read_bytes(), path


def test_a_one_file_kit_is_the_same_for_any_thread_count(tmp_path: Path) -> None:
    from tests.factories.keys import ed25519_key

    key, public = write_pair(ed25519_key("release"), tmp_path / "release")
    (tmp_path / "src" / "docs").mkdir(parents=True)
    (tmp_path / "src" / "docs" / "only.md").write_bytes(b"one\n")
    spec = tmp_path / "kit.yaml"
    spec.write_text(
        'apiVersion: kitbuilder/v1\nname: one\nversion: "1"\nsequence: 1\nexpires: "2099-01-01T00:00:00Z"\n'
        "product: demo\nchannel: stable\ndescription: one file\ndocs:\n  - id: d\n    source: src/docs\n"
    )
    built = set()
    for threads in ("0", "1", "2", "4"):
        out = tmp_path / f"t{threads}.kit.tar.zst"
        result = run_kit(
            "build",
            spec,
            "--key",
            key,
            "--out",
            out,
            "--threads",
            threads,
            "--no-provenance",
            env={"SOURCE_DATE_EPOCH": "1700000000"},
        )
        assert result.exit_code == 0, result.output
        built.add(out.read_bytes())
    assert len(built) == 1
    assert run_kit("verify", tmp_path / "t0.kit.tar.zst", "--key", public).exit_code == 0


def test_delta_build_from_a_base_whose_chunks_are_cut_elsewhere_writes_a_kit_that_verifies(tmp_path: Path) -> None:
    """A signed base whose large member is cut into 2+4+4+2 MiB frames (the writer cuts 4+4+4): its chunk N is not
    this build's chunk N, though the digests and sizes of the member agree. `kit build --delta-from` used to copy it
    by number (a full kit that failed verify, exit 0); now a reused frame must decode to the bytes it replaces."""
    from kitbuilder.archive.writer2 import compress_frame, raw_frame
    from tests.factories.kits import write_spec

    spec = write_spec(tmp_path, name="hostile-kit")
    key, public = write_pair(RELEASE, tmp_path / "rel")
    data = pseudo_random(12 * MiB)[: 12 * MiB]
    (tmp_path / "src" / "docs" / "big.bin").write_bytes(data)
    header = tarfmt.build_header("docs/big.bin", len(data), 0)
    frames = [SignedFrame(compress_frame(header, 3), tarfmt.BLOCK, (("docs/big.bin", 0, len(data), data),))]
    for start, end in ((0, 2), (2, 6), (6, 10), (10, 12)):
        frames.append(SignedFrame(raw_frame(data[start * MiB : end * MiB]), (end - start) * MiB))
    base = tmp_path / "base.kit.tar.zst"
    base.write_bytes(crafted_frames(frames))
    full = tmp_path / "full.kit.tar.zst"
    result = run_kit(
        "build", spec, "--key", key, "--out", tmp_path / "delta.kit.tar.zst", "--full-out", full, "--delta-from", base
    )
    assert result.exit_code == 0, result.output
    verified = run_kit("verify", full, "--key", public)
    assert verified.exit_code == 0, verified.output
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc {full} | tar -x -C {out}", shell=True, check=True)
    assert (out / "docs" / "operator" / "big.bin").read_bytes() == data


@pytest.mark.parametrize("threads", [0, 1, 4])
def test_a_file_that_shrinks_during_the_scan_reports_the_first_fault_in_file_order(threads: int) -> None:
    """Frame 2 corrupt and the file cut inside frame 3 (as if truncated while read): frame 2's fault comes first,
    whatever the workers were doing when the main thread met the short read."""
    import io

    from kitbuilder.archive import reader, scan2
    from kitbuilder.errors import ArchiveError, IntegrityError

    crafted = crafted2(raw_hook=_corrupt_frames(2))
    from kitbuilder.ops.kitfile import read_metadata

    # Format 2: the full map (payload members from the file list), as every reader builds it before a scan.
    location = read_metadata(io.BytesIO(crafted.data), reader.Caps()).location
    cut = location.index.frames[3].offset + 10
    with pytest.raises((ArchiveError, IntegrityError)) as caught:
        scan2.scan(
            io.BytesIO(crafted.data[:cut]),
            location.index,
            location.index_offset,
            max_window=reader.Caps().max_window,
            threads=threads,
        )
    assert "frame 2 " in str(caught.value), caught.value
