"""kit patch's report of a kit file: copiedFromBase + copiedFromDelta + rebuilt is the target's payload frame count,
for a content delta (some frames rebuilt, some copied from the base) and a verbatim one, and a rerun onto the
already patched output reports alreadyPatched with every count 0; each report matches its schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.ops.kitfile import open_kit, read_metadata
from tests.factories.cli import KitEnv, run_json
from tests.integration import test_patch_rebuilt_attack as attack
from tests.integration.test_json_outputs import assert_matches


def _frames(kit: Path) -> int:
    with open_kit(kit) as stream:
        return len(read_metadata(stream, Caps()).manifest.frames)


@pytest.mark.parametrize("frames", ["content", "verbatim"])
def test_patch_counts_add_up_to_the_target_frames_and_match_the_schema(
    kit_env: KitEnv, tmp_path: Path, frames: str
) -> None:
    base, full, delta = attack._content_delta(kit_env, frames)
    out = tmp_path / "new.kit.tar.zst"
    code, document = run_json("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert code == 0, document
    assert_matches("patch-report", document)
    counts = (document["copiedFromBase"], document["copiedFromDelta"], document["rebuilt"])
    assert sum(counts) == _frames(full), counts
    # The changed groups: made again from contents (content) or copied from the delta (verbatim).
    assert counts[2] > 0 and counts[1] == 0 if frames == "content" else counts[1] > 0 and counts[2] == 0, counts
    assert out.read_bytes() == full.read_bytes()
    code, again = run_json("patch", base, delta, "--key", kit_env.ed_pub, "--no-state", "--out", out)
    assert code == 0, again
    assert_matches("patch-report", again)
    assert again["alreadyPatched"] is True
    assert (again["copiedFromBase"], again["copiedFromDelta"], again["rebuilt"]) == (0, 0, 0)
