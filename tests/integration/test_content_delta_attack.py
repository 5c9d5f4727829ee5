"""Attacks on kit patch with content deltas (docs/delta.md, "Content deltas", "Patching a kit file").

What is asserted: a rebuilt group that draws its members from many base frames holds one base frame at a time
(peak memory as a verbatim delta's, not in the size of the base); a base whose file list is damaged is named with
its path; content members in a delta that does not say ``frames: content`` are refused alike in both modes (file
mode would ignore them where directory mode used them).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from kitbuilder.core.filelist import FILE_LIST
from tests.factories.cli import KitEnv
from tests.factories.kits import member_end
from tests.factories.measure import kit_peak
from tests.integration import test_content_delta
from tests.integration.test_content_delta import (
    Release,
    _build,
    _cli,
    _extract,
    _files,
    _one_line,
    _signed_delta,
    _tree,
)

release = test_content_delta.release  # the fixture: a base, its next release built in full and as a content delta

PACKAGES = 100


def test_a_group_drawing_on_every_base_frame_is_rebuilt_in_flat_memory(kit_env: KitEnv, tmp_path: Path) -> None:
    """The next release gathers a copy of every package's LICENSE in one directory: its new group frame holds
    only contents the base has, each in another base frame (a 1 MB file beside it). kit patch rebuilds that group
    from about a hundred base frames (~200 MB decoded): it must hold them one at a time, so its peak is about a
    verbatim delta's, which copies the group as it is."""
    rng = random.Random(5)
    docs = kit_env.root / "src/docs"
    for number in range(PACKAGES):
        package = docs / f"pkg{number:03d}"
        package.mkdir()
        (package / "LICENSE").write_text(rng.randbytes(1500).hex())
        (package / "data.bin").write_bytes(rng.randbytes(1_000_000))
    base = kit_env.root / "base.kit.tar.zst"
    _build(kit_env, base)
    gathered = docs / "all"
    gathered.mkdir()
    for number in range(PACKAGES):
        shutil.copy(docs / f"pkg{number:03d}/LICENSE", gathered / f"pkg{number:03d}-LICENSE")
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    full, delta, verbatim = (kit_env.root / f"{name}.kit.tar.zst" for name in ("full", "delta", "verbatim"))
    _build(kit_env, full)
    _build(kit_env, delta, "--delta-from", base)
    _build(kit_env, verbatim, "--delta-from", base, "--delta-frames", "verbatim")
    assert delta.stat().st_size * 10 < verbatim.stat().st_size  # the group travels as references to the base
    peaks = {}
    for name, kit in (("content", delta), ("verbatim", verbatim)):
        out = tmp_path / f"{name}.kit"
        code, stderr, peaks[name] = kit_peak("patch", base, kit, "--key", kit_env.ed_pub, "--no-state", "--out", out)
        assert code == 0, stderr
        assert out.read_bytes() == full.read_bytes()
    # Holding every base frame the group draws on costs ~200 MB more; one at a time, a few MB.
    assert peaks["content"] < peaks["verbatim"] + (48 << 20), peaks


def test_a_damaged_base_file_list_is_named_with_the_base(release: Release, tmp_path: Path) -> None:
    """The rebuild reads the base's file list (to find base contents): a damaged frame of it is the base's fault,
    named with the base's path, [4], nothing written."""
    end = member_end(release.base, FILE_LIST)
    data = bytearray(release.base.read_bytes())
    data[end - 20] ^= 0xFF
    release.base.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    pub = release.kit_env.ed_pub
    result = _cli("patch", release.base, release.delta, "--key", pub, "--no-state", "--out", out / "n")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, f"{release.base}: {FILE_LIST}", "the base is damaged")
    assert _files(out) == set()


@pytest.mark.parametrize("label", ["verbatim", None])
def test_content_members_in_a_delta_not_saying_content_are_refused_in_both_modes(
    release: Release, tmp_path: Path, label: str | None
) -> None:
    """A signed delta carrying content members whose delta block says ``frames: verbatim`` (or leaves it out, as
    an earlier release did). Directory mode used them, file mode ignored them and called the delta one for
    another base: both now refuse it [4] when it is opened, naming the member, and write nothing."""
    delta = _signed_delta(release, tmp_path / "mislabelled.kit.tar.zst", lambda item: item, label=label)
    pub = release.kit_env.ed_pub
    out = tmp_path / "out"
    out.mkdir()
    result = _cli("patch", release.base, delta, "--key", pub, "--no-state", "--out", out / "new.kit")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, "delta/patches/", "a content member in a delta whose manifest says frames: verbatim")
    assert _files(out) == set()
    installed = _extract(release.base, tmp_path / "installed")
    before = _tree(installed)
    result = _cli("patch", installed, delta, "--key", pub, "--no-state", "--in-place")
    assert result.returncode == 4, result.stderr
    _one_line(result.stderr, "delta/patches/", "a content member in a delta whose manifest says frames: verbatim")
    assert _tree(installed) == before
