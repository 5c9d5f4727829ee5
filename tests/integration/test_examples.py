"""The shipped example kits build, verify and apply on SQLite and PostgreSQL, as the README says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kitbuilder.apply.db import connect
from tests.factories.cli import KitEnv, apply_json, run_kit

ROOT = Path(__file__).resolve().parents[2]


def _build(kit_env: KitEnv, manifest: str) -> Path:
    out = kit_env.root / f"{manifest}.kit.tar.zst"
    result = run_kit("build", ROOT / "manifests" / f"{manifest}.yaml", "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 0, result.output
    assert run_kit("verify", out, "--key", kit_env.ed_pub).exit_code == 0
    return out


def _apply(kit_env: KitEnv, kit: Path, db_url: str, *extra: str) -> dict[str, object]:
    code, document, _ = apply_json(kit_env, kit, db_url, *extra)
    assert code == 0, document.get("error")
    return document


def test_canonical_key_v2_example(kit_env: KitEnv, db_url: str) -> None:
    kit = _build(kit_env, "canonical-key-v2")
    report = _apply(kit_env, kit, db_url, "--batch-size", "300")
    backfill = next(s for s in report["steps"] if s["id"] == "canonical-key-v2")  # type: ignore[union-attr]
    assert backfill["rowsProcessed"] == 2000 and backfill["batches"] == 7
    database = connect(db_url)
    dump, row_key, field, value, key = database.query(
        "SELECT dump, row_key, field, value, canonical_key FROM field_values WHERE id = 1"
    )[0]
    normalised = f"{dump.strip().lower()}|{row_key.strip()}|{field.strip().lower()}|{value.strip()}"
    assert key == "sha256:" + hashlib.sha256(normalised.encode()).hexdigest()
    assert database.query_value("SELECT COUNT(*) FROM field_values_dual") == 2000
    # Idempotent rerun, then roll the rollout back to the baseline.
    again = _apply(kit_env, kit, db_url)
    assert {s["status"] for s in again["steps"]} == {"skipped"}  # type: ignore[union-attr]
    result = run_kit("rollback", kit, "--key", kit_env.ed_pub, "--db", db_url, "--to-phase", "0-baseline")
    assert result.exit_code == 0, result.output
    assert database.query_value("SELECT COUNT(*) FROM field_values") == 2000
    from kitbuilder.apply.db import StatementError

    with pytest.raises(StatementError):  # either dialect's "no such column", typed at the database boundary
        database.query("SELECT canonical_key FROM field_values")
    database.close()


def test_dry_run_of_canonical_key_example_touches_nothing(kit_env: KitEnv, tmp_path: Path) -> None:
    kit = _build(kit_env, "canonical-key-v2")
    db = tmp_path / "empty.db"
    report = _apply(kit_env, kit, f"sqlite:///{db}", "--dry-run")
    assert report["status"] == "dry-run"
    assert [p["id"] for p in report["plan"]][:3] == ["baseline", "sample-field-values", "sample-sightings"]  # type: ignore[index,union-attr]
    database = connect(f"sqlite:///{db}")
    assert not database.table_exists("field_values") and not database.table_exists("kit_migrations")
    database.close()


def test_lnm_release_example_applies_and_rolls_back_per_phase(kit_env: KitEnv, db_url: str) -> None:
    kit = _build(kit_env, "lnm-release")
    report = _apply(kit_env, kit, db_url, "--batch-size", "500", "--stop-on-error")
    steps = {s["id"]: s for s in report["steps"]}  # type: ignore[union-attr]
    assert steps["raw-linkset"]["rowsProcessed"] == 5000 and steps["raw-linkset"]["batches"] == 10
    assert steps["supersedes"]["rowsProcessed"] == 1000  # one edge per prior conflict
    assert all(c["passed"] for c in report["checks"]["after"])  # type: ignore[index]
    database = connect(db_url)
    raw = database.query_value("SELECT raw_linkset FROM advisory_observations WHERE id = 7")
    assert json.loads(raw)["source"] == "redhat" and json.loads(raw)["raw"]["id"] == "CVE-2025-00008"
    result = run_kit("rollback", kit, "--key", kit_env.ed_pub, "--db", db_url, "--to-phase", "21-101", "--json")
    assert result.exit_code == 0, result.output
    reverted = [r["id"] for r in json.loads(result.stdout)["reverted"]]
    assert reverted == ["object-store", "21-103-cas-map", "supersedes", "raw-linkset", "21-102-supersedes"]
    assert not database.table_exists("advisory_supersedes") and not database.table_exists("cas_uri_map")
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations") == 5000
    again = _apply(kit_env, kit, db_url)
    assert {s["id"] for s in again["steps"] if s["status"] != "skipped"} == {  # type: ignore[union-attr]
        "21-102-supersedes",
        "raw-linkset",
        "supersedes",
        "21-103-cas-map",
        "object-store",
    }
    assert database.query_value("SELECT COUNT(*) FROM advisory_supersedes") == 1000
    database.close()


def test_quickstart_script_is_the_documented_main_job() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/quickstart.sh" in readme and "scripts/test.sh" in readme
    script = (ROOT / "scripts/quickstart.sh").read_text()
    for command in (
        "kit keygen",
        "kit trust init",
        "kit build manifests/lnm-release.yaml",
        "kit verify",
        "kit inspect",
        "kit apply",
    ):
        assert command in script
    assert "scripts/test.sh" in (ROOT / ".ci/run").read_text()
