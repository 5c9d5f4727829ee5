"""TUF-style trust root rotation: version N+1 needs a threshold of version N's keys and of its own."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories.cli import KitEnv, run_kit
from tests.factories.keys import ed25519_key, write_pair


def _root(kit_env: KitEnv, tmp_path: Path) -> Path:
    trust = tmp_path / "trust.json"
    assert run_kit("trust", "init", "--key", kit_env.ed_pub, "--expires", "2099-01-01", "--out", trust).exit_code == 0
    return trust


def test_rotation_then_update_moves_trust_to_the_new_key(kit_env: KitEnv, tmp_path: Path) -> None:
    trust = _root(kit_env, tmp_path)
    new_key, new_pub = write_pair(ed25519_key("successor"), tmp_path / "successor")
    successor = tmp_path / "trust-v2.json"
    result = run_kit(
        "trust",
        "rotate",
        "--trust-root",
        trust,
        "--key",
        new_pub,
        "--expires",
        "2099-01-01",
        "--sign-key",
        kit_env.ed_key,
        "--sign-key",
        new_key,
        "--out",
        successor,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(successor.read_text())["signed"]["version"] == 2
    assert run_kit("trust", "update", "--trust-root", trust, successor).exit_code == 0
    # A kit signed only by the rotated-out key is now refused; one by the new key verifies.
    old_kit = kit_env.root / "old.kit.tar.zst"
    assert run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", old_kit).exit_code == 0
    assert run_kit("verify", old_kit, "--trust-root", trust).exit_code == 3
    new_kit = kit_env.root / "new.kit.tar.zst"
    assert run_kit("build", kit_env.spec, "--key", new_key, "--out", new_kit).exit_code == 0
    assert run_kit("verify", new_kit, "--trust-root", trust).exit_code == 0


def test_successor_not_signed_by_the_old_keys_is_refused(kit_env: KitEnv, tmp_path: Path) -> None:
    trust = _root(kit_env, tmp_path)
    before = trust.read_bytes()
    rogue_key, rogue_pub = write_pair(ed25519_key("rogue"), tmp_path / "rogue")
    result = run_kit(
        "trust",
        "rotate",
        "--trust-root",
        trust,
        "--key",
        rogue_pub,
        "--expires",
        "2099-01-01",
        "--sign-key",
        rogue_key,
        "--out",
        tmp_path / "rogue.json",
    )
    assert result.exit_code == 3
    assert "signed by 0 of the current root's keys, 1 required" in result.stderr
    assert not (tmp_path / "rogue.json").exists()
    # Forge the file by hand: update refuses it and leaves the current root alone.
    document = json.loads(trust.read_text())
    document["signed"]["version"] = 2
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    result = run_kit("trust", "update", "--trust-root", trust, forged)
    assert result.exit_code == 3
    assert trust.read_bytes() == before


def test_version_must_follow_on(kit_env: KitEnv, tmp_path: Path) -> None:
    trust = _root(kit_env, tmp_path)
    successor = tmp_path / "v2.json"
    run_kit(
        "trust",
        "rotate",
        "--trust-root",
        trust,
        "--key",
        kit_env.ec_pub,
        "--expires",
        "2099-01-01",
        "--sign-key",
        kit_env.ed_key,
        "--sign-key",
        kit_env.ec_key,
        "--out",
        successor,
    )
    assert run_kit("trust", "update", "--trust-root", trust, successor).exit_code == 0
    # Replaying v2 onto v2 is not a successor.
    result = run_kit("trust", "update", "--trust-root", trust, successor)
    assert result.exit_code == 3 and "does not follow the current version 2" in result.stderr
