"""Hostile bases and deltas against format-2 patching: every frame is taken by its signed digest or not at all.

Signed deltas are crafted with the test keys through the same writer kit uses (what a holder of a release key,
or a buggy release pipeline, could produce); the damaged base is what anyone with write access to it can make.
Each case asserts the exit code, the one-line message and that nothing was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.deltas import craft_delta
from tests.integration.test_delta_format2 import Release, _extract, _release

VECTORS = Path(__file__).parent.parent / "vectors"


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _release(kit_env, "small")


def _craft_delta(kit_env: KitEnv, release: Release, out: Path, **how: Any) -> Path:
    return craft_delta(kit_env.ed_key, release.base, release.full, out, **how)


def _nothing_written(kit_env: KitEnv, out: Path) -> None:
    assert not out.exists()
    assert not list(kit_env.root.glob(f".{out.name}.*.part"))


def test_base_frame_with_the_signed_digest_but_other_bytes_is_refused(kit_env: KitEnv, release: Release) -> None:
    with open_kit(release.base) as stream:
        manifest = read_metadata(stream, Caps()).manifest
    chunk = next(n for n, f in enumerate(manifest.frames) if f.size == 4 << 20)  # a chunk of big.bin, from the base
    frame = manifest.frames[chunk]
    data = bytearray(release.base.read_bytes())
    data[frame.offset + frame.length // 2] ^= 0x01
    release.base.write_bytes(bytes(data))
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 4, result.output
    assert "compressed frames differ from their signed digest" in result.stderr
    assert "docs/operator/big.bin chunk" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    _nothing_written(kit_env, out)


def test_frames_in_neither_base_nor_delta_are_refused_in_both_modes(kit_env: KitEnv, release: Release) -> None:
    delta = _craft_delta(kit_env, release, kit_env.root / "empty.kit.tar.zst", ship="none")
    assert run_kit("verify", delta, "--key", kit_env.ed_pub, "--no-state").exit_code == 0  # genuine, signed
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 4, result.output
    assert "is neither in the base" in result.stderr and "nor in the delta" in result.stderr
    _nothing_written(kit_env, out)
    installed = kit_env.root / "installed"
    _extract(release.base, installed)
    before = {p: p.read_bytes() for p in installed.rglob("*") if p.is_file()}
    code, document = run_json("patch", installed, delta, "--key", kit_env.ed_pub, "--in-place")
    assert code == 4, document
    assert "neither the delta nor the installed kit holds its content" in document["error"]["message"]
    assert {p: p.read_bytes() for p in installed.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fault", ["gap", "swapped"])
def test_target_frames_that_do_not_tile_are_refused(kit_env: KitEnv, release: Release, fault: str) -> None:
    with open_kit(release.full) as stream:
        frames = [f.to_json() for f in read_metadata(stream, Caps()).manifest.frames]
    if fault == "gap":
        for frame in frames[2:]:
            frame["offset"] += 1  # one byte between frames 1 and 2, that no frame holds
    else:
        frames[1], frames[2] = frames[2], frames[1]  # each still a genuine frame, but not where it is signed
    delta = _craft_delta(kit_env, release, kit_env.root / "bad.kit.tar.zst", edit_target={"frames": frames})
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code in (4, 5), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    _nothing_written(kit_env, out)


def test_format_1_base_or_delta_is_refused_with_one_line(kit_env: KitEnv, release: Release) -> None:
    v1 = VECTORS / "valid-minimal.kit.tar.zst"
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", v1, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 2, result.output
    assert "the base is a format-1 kit" in result.stderr and "full kit" in result.stderr
    result = run_kit("patch", release.base, v1, "--key", kit_env.ed_pub, "--product", "demo", "--out", out)
    assert result.exit_code == 2, result.output
    assert "the delta is a format-1 kit" in result.stderr
    _nothing_written(kit_env, out)
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--delta-from", v1, "--out", kit_env.root / "d.kit.tar.zst"
    )
    assert result.exit_code == 2 and "format-1 kit" in result.stderr
    assert not (kit_env.root / "d.kit.tar.zst").exists()
