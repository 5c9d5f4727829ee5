"""Anti-rollback: older sequences refused, a clock set back does not revive a stale kit."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories.cli import KitEnv, run_kit


def _kit(kit_env: KitEnv, name: str, *, sequence: int, expires: str = "2099-01-01T00:00:00Z") -> Path:
    text = kit_env.spec.read_text()
    for line in text.splitlines():
        if line.startswith("sequence:"):
            text = text.replace(line, f"sequence: {sequence}")
        if line.startswith("expires:"):
            text = text.replace(line, f'expires: "{expires}"')
    kit_env.spec.write_text(text)
    out = kit_env.root / name
    assert run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out).exit_code == 0
    return out


def test_older_sequence_is_refused_after_a_newer_one(kit_env: KitEnv, tmp_path: Path) -> None:
    old = _kit(kit_env, "s1.kit.tar.zst", sequence=1)
    new = _kit(kit_env, "s2.kit.tar.zst", sequence=2)
    state = tmp_path / "state"
    assert run_kit("verify", old, "--key", kit_env.ed_pub, "--state-dir", state).exit_code == 0
    assert run_kit("verify", new, "--key", kit_env.ed_pub, "--state-dir", state).exit_code == 0
    refused = run_kit("verify", old, "--key", kit_env.ed_pub, "--state-dir", state)
    assert refused.exit_code == 6
    assert "sequence 1 is older than sequence 2 already accepted" in refused.stderr
    allowed = run_kit("verify", old, "--key", kit_env.ed_pub, "--state-dir", state, "--allow-downgrade", "--json")
    assert allowed.exit_code == 0
    assert any("DOWNGRADE allowed" in c for c in json.loads(allowed.stdout)["checks"])
    recorded = json.loads((state / "demo-kit@stable.json").read_text())
    assert recorded["highestSequence"] == 2


def test_clock_set_back_does_not_revive_an_expired_kit(kit_env: KitEnv, tmp_path: Path) -> None:
    stale = _kit(kit_env, "stale.kit.tar.zst", sequence=3, expires="2030-01-01T00:00:00Z")
    fresh = _kit(kit_env, "fresh.kit.tar.zst", sequence=3, expires="2099-01-01T00:00:00Z")
    state = tmp_path / "state"
    assert run_kit("verify", fresh, "--key", kit_env.ed_pub, "--state-dir", state, "--now", "2031-06-01").exit_code == 0
    # The host clock is now set back before the stale kit's expiry: still refused.
    result = run_kit("verify", stale, "--key", kit_env.ed_pub, "--state-dir", state, "--now", "2029-01-01")
    assert result.exit_code == 6 and "expired" in result.stderr
    # Without the state (a fresh host) the same clock would have accepted it.
    assert run_kit("verify", stale, "--key", kit_env.ed_pub, "--no-state", "--now", "2029-01-01").exit_code == 0


def test_apply_refuses_a_rollback_too(kit_env: KitEnv, tmp_path: Path) -> None:
    old = _kit(kit_env, "s1.kit.tar.zst", sequence=1)
    new = _kit(kit_env, "s2.kit.tar.zst", sequence=2)
    state = tmp_path / "state"
    db = tmp_path / "site.db"
    assert run_kit("verify", new, "--key", kit_env.ed_pub, "--state-dir", state).exit_code == 0
    result = run_kit(
        "apply", old, "--key", kit_env.ed_pub, "--state-dir", state, "--db", db, "--artifacts", tmp_path / "a"
    )
    assert result.exit_code == 6
    assert not db.exists() or db.stat().st_size == 0
