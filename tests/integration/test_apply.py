"""kit apply end to end through the CLI, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import Database, connect
from tests.factories.apply_kits import UP_101, populate_observations_sql, write_apply_kit_source
from tests.factories.cli import KitEnv, apply_json, run_kit


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    handle = connect(db_url)
    yield handle
    handle.close()


def build_apply_kit(kit_env: KitEnv, name: str = "apply.kit.tar.zst", **source: Any) -> Path:
    root = kit_env.root / name.replace(".kit.tar.zst", "")
    root.mkdir(exist_ok=True)
    spec = write_apply_kit_source(root, **source)
    out = kit_env.root / name
    result = run_kit("build", spec, "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def seed_existing_rows(database: Database, count: int, *, poison_every: int = 0) -> None:
    """The site already runs 21-101's schema with data, as in the runbooks."""
    with database.transaction():
        database.run_script(UP_101)
        for statement in populate_observations_sql(count, poison_every=poison_every):
            database.execute(statement)


def apply(kit: Path, kit_env: KitEnv, db_url: str, *extra: Any) -> tuple[int, dict[str, Any], str]:
    return apply_json(kit_env, kit, db_url, *extra)


def test_apply_runs_every_step_and_writes_evidence(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 1200)
    kit = build_apply_kit(kit_env)
    code, report, _ = apply(kit, kit_env, db_url, "--batch-size", "500")
    assert code == 0, report.get("error")
    steps = {s["id"]: s for s in report["steps"]}
    assert [s["id"] for s in report["steps"]] == [
        "21-101-shards",
        "21-102-supersedes",
        "raw-linkset",
        "21-103-cas-map",
        "cas-uri-map",
    ]
    assert steps["raw-linkset"]["rowsProcessed"] == 1200
    assert steps["raw-linkset"]["batches"] == 3
    assert steps["raw-linkset"]["remainingBefore"] == 1200 and steps["raw-linkset"]["remainingAfter"] == 0
    assert (
        database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset = 'raw:' || document")
        == 1200
    )
    assert database.query_value("SELECT COUNT(*) FROM cas_uri_map") == 3
    assert all(c["passed"] for c in report["checks"]["after"])
    evidence = Path(report["evidence"]["directory"])
    body = (evidence / "report.json").read_bytes()
    import hashlib

    assert (evidence / "report.json.sha256").read_text() == f"{hashlib.sha256(body).hexdigest()}  report.json\n"
    assert (
        database.query_value("SELECT report_sha256 FROM kit_runs WHERE run_id = :r", {"r": report["runId"]})
        == hashlib.sha256(body).hexdigest()
    )
    metrics = (evidence / "metrics.prom").read_text()
    assert 'kit_documents_processed_total{job="raw-linkset",kit="lnm-apply"} 1200' in metrics
    assert "kit_migration_duration_seconds" in metrics
    saved = json.loads(body)
    assert saved["database"]["dialect"] == database.dialect
    assert saved["kit"]["sha256"] == hashlib.sha256(kit.read_bytes()).hexdigest()


def test_rerun_of_applied_kit_is_a_noop(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 50)
    kit = build_apply_kit(kit_env)
    assert apply(kit, kit_env, db_url)[0] == 0
    events_before = database.query_value("SELECT COUNT(*) FROM kit_events WHERE event = 'deploy'")
    code, report, _ = apply(kit, kit_env, db_url)
    assert code == 0
    assert {s["status"] for s in report["steps"]} == {"skipped"}
    assert database.query_value("SELECT COUNT(*) FROM kit_events WHERE event = 'deploy'") == events_before


def test_dry_run_counts_by_tenant_and_touches_nothing(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 90)
    database.execute("ALTER TABLE advisory_observations ADD COLUMN raw_linkset TEXT")
    kit = build_apply_kit(kit_env)
    code, report, _ = apply(kit, kit_env, db_url, "--dry-run")
    assert code == 0
    backfill = next(p for p in report["plan"] if p["kind"] == "backfill")
    assert backfill["byTenant"] == {"tenant-0": 30, "tenant-1": 30, "tenant-2": 30}
    assert report["plan"][0]["sql"].startswith("CREATE TABLE IF NOT EXISTS advisory_observations")
    assert not database.table_exists("kit_migrations")
    # --artifacts was given: the dry run leaves hashed evidence marked as a dry run, and no metrics.
    (evidence,) = (kit_env.root / "artifacts").iterdir()
    assert evidence.name.endswith("-dry-run") and not (evidence / "metrics.prom").exists()
    assert json.loads((evidence / "report.json").read_text())["dryRun"] is True


def test_poison_rows_are_quarantined_and_job_continues(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 1000, poison_every=250)  # 4 failing rows = 0.4% < 1%
    kit = build_apply_kit(kit_env, max_missing=4)
    code, report, _ = apply(kit, kit_env, db_url, "--batch-size", "100")
    assert code == 0, report.get("error")
    job = next(s for s in report["steps"] if s["id"] == "raw-linkset")
    assert (job["rowsProcessed"], job["rowsFailed"]) == (996, 4)
    keys = sorted(json.loads(k) for (k,) in database.query("SELECT row_key FROM kit_backfill_quarantine"))
    assert keys == [250, 500, 750, 1000]
    assert "POISON" not in {r for (r,) in database.query("SELECT DISTINCT raw_linkset FROM advisory_observations")}


def test_error_rate_over_threshold_pauses_then_resumes(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 1000, poison_every=20)  # 5% failing
    kit = build_apply_kit(kit_env, max_missing=50)
    code, report, stderr = apply(kit, kit_env, db_url, "--batch-size", "100")
    assert code == 10
    assert "paused: error rate" in report["error"]["message"]
    row = database.query("SELECT status, pause_reason FROM kit_backfill_runs WHERE job = 'raw-linkset'")[0]
    assert row[0] == "paused" and "over 1.00%" in row[1]
    # The operator accepts a higher rate for this run: the job resumes from its cursor.
    code, report, _ = apply(kit, kit_env, db_url, "--batch-size", "100", "--error-rate", "0.1")
    assert code == 0, report.get("error")
    assert database.query_value("SELECT COUNT(*) FROM kit_backfill_quarantine") == 50
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset IS NOT NULL") == 950


def test_paused_job_resumes_after_the_operator_fixes_the_rows(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 1000, poison_every=20)  # 5% failing
    kit = build_apply_kit(kit_env, max_missing=50)
    code, report, stderr = apply(kit, kit_env, db_url, "--batch-size", "100")
    assert code == 10
    message = report["error"]["message"]
    assert "--error-rate" in message and "kit_backfill_quarantine" in message and stderr.count("\n") == 1
    # The operator fixes the data; the rerun retries the quarantined rows first and measures the rate afresh.
    database.execute("UPDATE advisory_observations SET document = 'doc-fixed' WHERE document LIKE '%poison%'")
    code, report, _ = apply(kit, kit_env, db_url, "--batch-size", "100")
    assert code == 0, report.get("error")
    assert database.query_value("SELECT COUNT(*) FROM kit_backfill_quarantine") == 0
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset IS NULL") == 0
    job = next(s for s in report["steps"] if s["id"] == "raw-linkset")
    assert (job["rowsProcessed"], job["rowsFailed"], job["remainingAfter"]) == (1000, 0, 0)


def test_stop_on_error_stops_at_first_failing_row(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 300, poison_every=120)
    kit = build_apply_kit(kit_env, max_missing=10)
    code, report, stderr = apply(kit, kit_env, db_url, "--batch-size", "50", "--stop-on-error")
    assert code == 10
    assert "id=120" in report["error"]["message"]
    assert stderr.count("\n") == 1
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset IS NOT NULL") == 119
    assert database.query_value("SELECT status FROM kit_backfill_runs") == "failed"


def test_tenant_limited_backfill(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 60)
    kit = build_apply_kit(kit_env, max_missing=60, missing_on_fail="warn")
    code, report, _ = apply(kit, kit_env, db_url, "--tenant", "tenant-1")
    assert code == 0, report.get("error")
    assert database.query("SELECT DISTINCT tenant FROM advisory_observations WHERE raw_linkset IS NOT NULL") == [
        ("tenant-1",)
    ]


def test_checksum_drift_is_refused_until_repaired(kit_env: KitEnv, db_url: str, database: Database) -> None:
    kit = build_apply_kit(kit_env)
    assert apply(kit, kit_env, db_url)[0] == 0
    root = kit_env.root / "changed"
    root.mkdir()
    spec = write_apply_kit_source(root, sequence=2)
    (root / "src/21-101/up.sql").write_text(UP_101 + "-- edited after release\n")
    changed = kit_env.root / "changed.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", changed).exit_code == 0
    code, report, stderr = apply(changed, kit_env, db_url)
    assert code == 8
    assert "21-101-shards: already applied with checksum" in report["error"]["message"]
    result = run_kit(
        "repair",
        changed,
        "--key",
        kit_env.ed_pub,
        "--db",
        db_url,
        "--accept-checksum",
        "21-101-shards",
        "--reason",
        "comment-only change",
    )
    assert result.exit_code == 0, result.output
    assert apply(changed, kit_env, db_url)[0] == 0
    assert database.query_value("SELECT COUNT(*) FROM kit_events WHERE event = 'repair'") == 1


def test_failed_migration_rolls_back_and_is_recorded(kit_env: KitEnv, db_url: str, database: Database) -> None:
    root = kit_env.root / "broken"
    root.mkdir()
    spec = write_apply_kit_source(root)
    (root / "src/21-102/verify.sql").write_text("SELECT COUNT(*) = 42 FROM advisory_supersedes;\n")
    kit = kit_env.root / "broken.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    code, report, _ = apply(kit, kit_env, db_url)
    assert code == 8
    assert "verify query returned false" in report["error"]["message"]
    assert not database.table_exists("advisory_supersedes")  # rolled back with its verify
    status = database.query_value("SELECT status FROM kit_migrations WHERE id = '21-102-supersedes'")
    assert status == "failed"
    assert database.query_value("SELECT status FROM kit_runs WHERE run_id = :r", {"r": report["runId"]}) == "failed"


def test_rollback_to_phase_reverts_later_phases_newest_first(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 20)
    kit = build_apply_kit(kit_env)
    assert apply(kit, kit_env, db_url)[0] == 0
    result = run_kit("rollback", kit, "--key", kit_env.ed_pub, "--db", db_url, "--to-phase", "21-101", "--json")
    assert result.exit_code == 0, result.output
    reverted = [(r["id"], r["status"]) for r in json.loads(result.stdout)["reverted"]]
    assert reverted == [
        ("cas-uri-map", "reverted"),
        ("21-103-cas-map", "reverted"),
        ("raw-linkset", "reverted"),
        ("21-102-supersedes", "reverted"),
    ]
    assert not database.table_exists("cas_uri_map") and not database.table_exists("advisory_supersedes")
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations") == 20
    # Re-applying brings the later phases back.
    code, report, _ = apply(kit, kit_env, db_url)
    assert code == 0, report.get("error")
    assert database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset IS NOT NULL") == 20
    assert database.query_value("SELECT COUNT(*) FROM cas_uri_map") == 3


def test_apply_refuses_unverified_kit_and_writes_nothing(kit_env: KitEnv, db_url: str, database: Database) -> None:
    kit = build_apply_kit(kit_env)
    result = run_kit("apply", kit, "--key", kit_env.other_pub, "--db", db_url, "--artifacts", kit_env.root / "a")
    assert result.exit_code == 3
    assert not database.table_exists("kit_migrations")
    assert not (kit_env.root / "a").exists()


def test_status_reports_progress(kit_env: KitEnv, db_url: str, database: Database) -> None:
    seed_existing_rows(database, 10)
    kit = build_apply_kit(kit_env)
    apply(kit, kit_env, db_url)
    result = run_kit("status", "--db", db_url, "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0
    assert {m["id"] for m in document["migrations"]} >= {"21-101-shards", "cas-uri-map"}
    assert document["backfills"][0]["rowsProcessed"] == 10


def test_csv_seed_is_upserted_idempotently(kit_env: KitEnv, db_url: str, database: Database) -> None:
    root = kit_env.root / "csv"
    (root / "m").mkdir(parents=True)
    (root / "seed").mkdir()
    (root / "m/up.sql").write_text("CREATE TABLE IF NOT EXISTS regions (code TEXT PRIMARY KEY, name TEXT NOT NULL);\n")
    (root / "seed/regions.csv").write_text("code,name\neu,Europe\nus,United States\napac,Asia Pacific\n")
    spec = root / "spec.yaml"
    spec.write_text(
        'apiVersion: kitbuilder/v1\nname: csv-seed\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\n'
        "product: test\nmigrations:\n  - id: regions\n    phase: '1'\n    source: m\n"
        "seeds:\n  - id: regions-seed\n    phase: '1'\n    source: seed\n    table: regions\n    key: [code]\n"
    )
    kit = kit_env.root / "csv.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    database.run_script("CREATE TABLE IF NOT EXISTS regions (code TEXT PRIMARY KEY, name TEXT NOT NULL);")
    database.execute("INSERT INTO regions (code, name) VALUES ('eu', 'old name')")
    code, report, _ = apply(kit, kit_env, db_url)
    assert code == 0, report.get("error")
    seed = next(s for s in report["steps"] if s["id"] == "regions-seed")
    assert seed["rows"] == 3
    assert database.query("SELECT code, name FROM regions ORDER BY code") == [
        ("apac", "Asia Pacific"),
        ("eu", "Europe"),
        ("us", "United States"),
    ]


def test_missing_sqlite_database_is_never_created_except_by_apply(kit_env: KitEnv, tmp_path: Path) -> None:
    kit = build_apply_kit(kit_env)
    trust = ("--key", kit_env.ed_pub)
    typo = tmp_path / "not" / "there.db"
    # A mistyped directory: apply and its dry run refuse it (exit 2) and create nothing.
    for extra in (("--dry-run",), ()):
        code, report, stderr = apply(kit, kit_env, str(typo), *extra)
        assert code == 2 and "does not exist" in report["error"]["message"], report
        assert stderr.count("\n") == 1
    assert not typo.parent.exists()
    # A missing file in an existing directory: status, rollback and repair say so (exit 2); a dry run reads it
    # as empty and creates nothing; only apply creates it.
    missing = tmp_path / "site.db"
    for command in (
        ("status", "--db", missing),
        ("rollback", kit, *trust, "--db", missing, "--to-phase", "none", "--dry-run"),
        ("repair", "--db", missing, "--release-lock", "--reason", "test"),
    ):
        result = run_kit(*command)
        assert result.exit_code == 2, result.output
        assert "no SQLite database there" in result.stderr and result.stderr.count("\n") == 1
    code, report, _ = apply(kit, kit_env, str(missing), "--dry-run")
    assert code == 0 and report["status"] == "dry-run"
    assert not missing.exists()
    code, report, _ = apply(kit, kit_env, str(missing))
    assert code == 0, report.get("error")
    assert missing.exists()


def test_apply_requires_db_or_kit_db_url(kit_env: KitEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kit = build_apply_kit(kit_env)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIT_DB_URL", raising=False)
    result = run_kit("apply", kit, "--key", kit_env.ed_pub, "--artifacts", tmp_path / "a")
    assert result.exit_code == 2 and "--db" in result.output
    assert not (tmp_path / "kit.db").exists() and not (tmp_path / "a").exists()
    target = tmp_path / "from-env.db"
    result = run_kit(
        "apply", kit, "--key", kit_env.ed_pub, "--artifacts", tmp_path / "a", env={"KIT_DB_URL": str(target)}
    )
    assert result.exit_code == 0, result.output
    assert target.exists()


def test_dry_run_on_postgresql_is_read_only(kit_env: KitEnv, pg_dsn: str) -> None:
    kit = build_apply_kit(kit_env)
    code, _, _ = apply(kit, kit_env, pg_dsn, "--dry-run")
    assert code == 0
    database = connect(pg_dsn, read_only=True)  # a normal connection would install kit_sha256 itself
    assert database.query_value("SELECT COUNT(*) FROM pg_proc WHERE proname = 'kit_sha256'") == 0
    assert not database.table_exists("kit_migrations")
    database.close()
