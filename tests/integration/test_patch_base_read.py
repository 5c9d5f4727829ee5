"""`kit patch` (file mode) reads of the base only what it uses: its manifest, bound by the delta's signed digest.

Every payload frame copied from the base must have the digest the target signs, and the base's manifest.json must
have the digest the delta signs as its base: so the base's own signatures, checksums and metadata frames are not
read again (they cost time and memory in the number of files, and could only refuse frames that are checked
anyway). A base that is not the delta's base is still refused before anything is written.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kitbuilder.archive import reader
from kitbuilder.archive.index import MemberEntry
from tests.factories.cli import KitEnv, run_kit
from tests.integration.test_delta_format2 import Release, _release


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _release(kit_env, "small")


def _damage_member_frame(kit: Path, member: str) -> None:
    """Flip a byte in the middle of the compressed frame holding ``member`` (a metadata member: its own frame)."""
    data = bytearray(kit.read_bytes())
    index = reader.read_index(io.BytesIO(bytes(data)), reader.Caps()).index
    entry = next(m for m in index.members if m.path == member)
    assert isinstance(entry, MemberEntry)
    frame = index.frames[entry.frame]
    data[frame.offset + frame.length // 2] ^= 0xFF
    kit.write_bytes(bytes(data))


def test_a_base_whose_unused_metadata_is_damaged_still_patches_to_the_exact_target(
    kit_env: KitEnv, release: Release
) -> None:
    _damage_member_frame(release.base, "SHA256SUMS.sig")
    assert run_kit("verify", release.base, "--key", kit_env.ed_pub, "--no-state").exit_code in (4, 5)
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == release.full.read_bytes()


def test_a_base_whose_manifest_is_not_the_deltas_base_is_refused(kit_env: KitEnv, release: Release) -> None:
    """The full kit of the next release is a valid, signed kit, but not the kit this delta applies to."""
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.full, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code != 0
    assert "this delta applies to the kit whose manifest has SHA-256" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists() and not list(kit_env.root.glob(f".{out.name}.*"))


def test_a_base_whose_manifest_frame_is_damaged_is_refused(kit_env: KitEnv, release: Release) -> None:
    _damage_member_frame(release.base, "manifest.json")
    out = kit_env.root / "new.kit.tar.zst"
    result = run_kit("patch", release.base, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code in (4, 5), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists() and not list(kit_env.root.glob(f".{out.name}.*"))
