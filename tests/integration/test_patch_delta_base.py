"""A delta kit is never the base of a delta or of a patch: a site holds full kits, a delta only carries frames.

`kit build --delta-from DELTA` used to succeed: the delta it made applies only to that delta file, which no site
holds, so the mistake showed only at the site ([6], wrong base) after shipping. `kit patch DELTA1 DELTA2` with a
delta as the base is the same mistake from the other side. Both are refused at once, one line, exit 2, nothing
written.
"""

from __future__ import annotations

import pytest

from tests.factories.cli import KitEnv, run_kit
from tests.integration.test_delta_format2 import Release, _release


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _release(kit_env, "small")


def _one_line(stderr: str, *words: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("kit: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for word in words:
        assert word in stderr, stderr


def test_a_delta_is_refused_as_the_base_of_a_delta_build(kit_env: KitEnv, release: Release) -> None:
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 2", "sequence: 3"))
    out, full = kit_env.root / "next-delta.kit.tar.zst", kit_env.root / "next-full.kit.tar.zst"
    before = sorted(p.name for p in kit_env.root.iterdir())
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--delta-from", release.delta, "--out", out, "--full-out", full
    )
    assert result.exit_code == 2, result.output
    _one_line(result.stderr, str(release.delta), "delta kit")
    assert sorted(p.name for p in kit_env.root.iterdir()) == before


def test_a_delta_is_refused_as_the_base_of_a_patch(kit_env: KitEnv, release: Release) -> None:
    out = kit_env.root / "new.kit.tar.zst"
    before = sorted(p.name for p in kit_env.root.iterdir())
    result = run_kit("patch", release.delta, release.delta, "--key", kit_env.ed_pub, "--out", out)
    assert result.exit_code == 2, result.output
    _one_line(result.stderr, str(release.delta), "delta kit")
    assert sorted(p.name for p in kit_env.root.iterdir()) == before
