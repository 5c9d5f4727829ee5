"""kit build writes format 2 (docs/format.md §0): the layout rules, and the same bytes for any --threads."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from kitbuilder.archive import layout, reader
from kitbuilder.archive.index import KitIndex
from kitbuilder.core.manifest import METADATA_FILES
from kitbuilder.ops.kitfile import located_index
from tests.factories.cli import KitEnv, run_kit
from tests.factories.hostile import pseudo_random

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture
def mixed_env(kit_env: KitEnv) -> KitEnv:
    """The standard tree plus many small files (several groups), a 9 MiB text file and a 3 MiB random one."""
    docs = kit_env.root / "src" / "docs"
    for number in range(400):
        (docs / f"n{number:03d}.md").write_bytes((f"line {number}\n" * (number * 7 % 600)).encode())
    (docs / "big.txt").write_bytes(b"".join(b"%08d some text that compresses\n" % i for i in range(300_000)))
    (docs / "random.bin").write_bytes(pseudo_random(3 << 20))
    return kit_env


def _build(env: KitEnv, out: Path, *extra: str) -> bytes:
    result = run_kit("build", env.spec, "--key", env.ed_key, "--out", out, *extra, env=EPOCH)
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def _index(kit: Path) -> KitIndex:
    with kit.open("rb") as stream:
        return located_index(stream, reader.Caps())


def test_same_bytes_for_any_thread_count(mixed_env: KitEnv, tmp_path: Path) -> None:
    kits = {n: _build(mixed_env, tmp_path / f"t{n}.kit.tar.zst", "--threads", str(n)) for n in (0, 1, 2, 4)}
    default = _build(mixed_env, tmp_path / "default.kit.tar.zst")
    digests = {n: hashlib.sha256(data).hexdigest() for n, data in kits.items()}
    assert len(set(digests.values())) == 1, digests
    assert hashlib.sha256(default).hexdigest() == digests[0]


def test_layout_follows_the_frame_rules(mixed_env: KitEnv, tmp_path: Path) -> None:
    kit = tmp_path / "mixed.kit.tar.zst"
    _build(mixed_env, kit)
    index = _index(kit)
    assert index.format_version == 2
    spans = index.spans()
    frames = index.frames
    big = next(s for s in spans if s.path.endswith("/big.txt"))
    # A large member: its header alone in one frame, then CHUNK-sized frames (the last one shorter).
    assert frames[big.frame].size == layout.BLOCK and big.at == 0
    assert [f.size for f in big.frames[1:-1]] == [layout.CHUNK] * (len(big.frames) - 2)
    assert sum(f.size for f in big.frames[1:]) == layout.padded(big.size)
    # Raw-block frames for incompressible data: about as long as the data.
    rnd = next(s for s in spans if s.path.endswith("/random.bin"))
    assert all(f.length >= f.size for f in rnd.frames[1:])
    # Groups hold whole small members and stay under GROUP_MAX + LARGE + 512; there are several of them.
    groups = {s.frame for s in spans if len(s.frames) == 1 and s.path not in METADATA_FILES}
    assert len(groups) >= 2
    assert all(frames[n].size < layout.GROUP_MAX + layout.LARGE + layout.BLOCK for n in groups)
    # Each metadata member is one frame of its own.
    for span in spans:
        if span.path in METADATA_FILES:
            assert span.at == 0 and span.frames[0].size == layout.member_bytes(span.size)
    # The signed manifest: format 2, its frames are the index's payload frames, no mtime or thread flag.
    manifest = json.loads(
        subprocess.run(f"zstd -dc {kit} | tar -xO manifest.json", shell=True, check=True, capture_output=True).stdout
    )
    assert manifest["apiVersion"] == "kitbuilder/v2"
    assert manifest["build"]["compression"] == {"algorithm": "zstd", "level": 3}
    assert "mtime" not in manifest["build"]
    assert manifest["frames"] == [f.to_json() for f in frames[: len(manifest["frames"])]]
    assert frames[len(manifest["frames"])].offset == next(s for s in spans if s.path == METADATA_FILES[0]).offset


def test_stock_tools_extract_every_file_dated_1970(mixed_env: KitEnv, tmp_path: Path) -> None:
    kit = tmp_path / "mixed.kit.tar.zst"
    _build(mixed_env, kit)
    listing = subprocess.run(
        f"zstd -dc {kit} | tar -tv --full-time", shell=True, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert listing and all(" 1970-01-01 00:00:00 " in line for line in listing)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc {kit} | tar -x -C {out}", shell=True, check=True)
    source = mixed_env.root / "src" / "docs"
    for path in source.iterdir():
        assert (out / "docs" / "operator" / path.name).read_bytes() == path.read_bytes()
    result = run_kit("verify", kit, "--key", mixed_env.ed_pub)
    assert result.exit_code == 0, result.output
