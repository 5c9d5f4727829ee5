"""Backfill pre/post checks run and halt; dry-run counts say how far they can be trusted; typed evidence.

On SQLite and on a real PostgreSQL server, through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import Database, connect
from tests.factories.cli import run_kit
from tests.factories.crafted_apply import craft_apply_kit
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair

TABLE = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, tenant TEXT);\n"
ADD_DONE = "ALTER TABLE items ADD COLUMN done TEXT;\n"
JOB = """\
table: items
key: id
tenant_column: tenant
predicate: done IS NULL
set: {done: "'y'"}
metric: items_pending
"""


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    return write_pair(RELEASE, tmp_path / "keys" / "release")[1]


@pytest.fixture
def database(db_url: str) -> Any:
    handle = connect(db_url)
    yield handle
    handle.close()


def items(database: Database, count: int, *, nameless: int = 0) -> None:
    with database.transaction():
        database.execute(TABLE)
        for i in range(1, count + 1):
            database.execute(
                "INSERT INTO items (id, name, tenant) VALUES (:i, :n, :t)",
                {"i": i, "n": None if i <= nameless else f"n{i}", "t": f"t{i % 2}"},
            )


def kit_with_job(tmp_path: Path, job: str, name: str = "k") -> Path:
    components = [
        {"id": "add-done", "role": "migration", "phase": "1"},
        {"id": "fill-done", "role": "backfill", "phase": "1"},
    ]
    files = {
        "migrations/add-done/up.sql": ("add-done", ADD_DONE.encode()),
        "backfills/fill-done.yaml": ("fill-done", job.encode()),
    }
    return craft_apply_kit(tmp_path / f"{name}.kit.tar.zst", components, files)


def apply(kit: Path, pub: Path, db_url: str, artifacts: Path, *extra: Any) -> tuple[int, dict[str, Any], str]:
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", artifacts, "--json", *extra)
    return result.exit_code, json.loads(result.stdout), result.stderr


def events(database: Database, event: str) -> list[str]:
    return [
        row[0] for row in database.query("SELECT detail FROM kit_events WHERE event = :e ORDER BY id", {"e": event})
    ]


def test_failing_pre_check_halts_before_the_first_batch(
    tmp_path: Path, pub: Path, db_url: str, database: Database
) -> None:
    items(database, 10)
    job = JOB + "pre_checks:\n  - {id: enough-rows, kind: count, table: items, expect: {min: 50}}\n"
    code, report, stderr = apply(kit_with_job(tmp_path, job), pub, db_url, tmp_path / "a")
    assert code == 10, report
    assert stderr.count("\n") == 1 and "fill-done: pre_check" in stderr and "enough-rows" in stderr
    assert database.query_value("SELECT COUNT(*) FROM items WHERE done IS NOT NULL") == 0
    assert report["error"]["exitCode"] == 10 and report["status"] == "failed"
    assert any("enough-rows: FAILED" in e for e in events(database, "check"))


def test_failing_post_check_pauses_the_job_and_a_rerun_after_the_fix_finishes(
    tmp_path: Path, pub: Path, db_url: str, database: Database
) -> None:
    items(database, 10, nameless=2)
    job = (
        JOB
        + "post_checks:\n  - {id: all-named, kind: sql, query: 'SELECT COUNT(*) = 0 FROM items WHERE name IS NULL'}\n"
    )
    kit = kit_with_job(tmp_path, job)
    code, report, stderr = apply(kit, pub, db_url, tmp_path / "a")
    assert code == 10 and "post_check" in stderr and "all-named" in stderr, stderr
    assert database.query_value("SELECT status FROM kit_backfill_runs WHERE job = 'fill-done'") == "paused"
    with database.transaction():
        database.execute("UPDATE items SET name = 'fixed' WHERE name IS NULL")
    code, report, _ = apply(kit, pub, db_url, tmp_path / "a")
    assert code == 0, report.get("error")
    step = next(s for s in report["steps"] if s["id"] == "fill-done")
    assert step["status"] == "finished"
    assert [(c["id"], c["passed"]) for c in step["postChecks"]] == [("all-named", True)]
    assert database.query_value("SELECT status FROM kit_backfill_runs WHERE job = 'fill-done'") == "finished"


def test_warn_check_is_recorded_and_the_run_goes_on(tmp_path: Path, pub: Path, db_url: str, database: Database) -> None:
    items(database, 4)
    job = JOB + (
        "pre_checks:\n  - {id: p, kind: unique, table: items, columns: [tenant], on_fail: warn}\n"
        "post_checks:\n  - {id: q, kind: count, table: items, where: done IS NULL, expect: {equals: 0}}\n"
    )
    code, report, _ = apply(kit_with_job(tmp_path, job), pub, db_url, tmp_path / "a")
    assert code == 0, report.get("error")
    step = next(s for s in report["steps"] if s["id"] == "fill-done")
    assert [(c["id"], c["passed"], c["onFail"]) for c in step["preChecks"]] == [("p", False, "warn")]
    assert [(c["id"], c["passed"]) for c in step["postChecks"]] == [("q", True)]


def test_metric_option_reaches_metrics_prom_and_durations_are_milliseconds(
    tmp_path: Path, pub: Path, db_url: str, database: Database
) -> None:
    items(database, 6)
    code, report, _ = apply(kit_with_job(tmp_path, JOB), pub, db_url, tmp_path / "a")
    assert code == 0, report.get("error")
    evidence = Path(report["evidence"]["directory"])
    metrics = (evidence / "metrics.prom").read_text()
    assert "# TYPE items_pending gauge" in metrics
    assert 'items_pending{job="fill-done",kit="crafted-apply"} 0' in metrics
    assert 'kit_documents_remaining{job="fill-done",kit="crafted-apply",metric="items_pending"} 0' in metrics
    saved = (evidence / "report.json").read_text()
    assert "durationSeconds" not in saved
    step = next(s for s in json.loads(saved)["steps"] if s["id"] == "fill-done")
    assert isinstance(step["durationMs"], int) and step["metric"] == "items_pending"


def test_dry_run_count_is_an_upper_bound_when_the_predicate_needs_the_kit_then_exact(
    tmp_path: Path, pub: Path, db_url: str, database: Database
) -> None:
    items(database, 8)
    kit = kit_with_job(tmp_path, JOB)
    code, dry, _ = apply(kit, pub, db_url, tmp_path / "a", "--dry-run")
    assert code == 0, dry.get("error")
    entry = next(p for p in dry["plan"] if p["kind"] == "backfill")
    assert entry["countBasis"] == "upper-bound" and entry["wouldUpdate"] == 8
    assert "done" in entry["countReason"] and entry["sql"].startswith("UPDATE items SET done = 'y'")
    text = run_kit("apply", kit, "--key", pub, "--db", db_url, "--dry-run")
    assert text.exit_code == 0, text.output
    assert "(upper bound)" in text.stdout and "| ALTER TABLE items ADD COLUMN done TEXT;" in text.stdout
    assert "| UPDATE items SET done = 'y'" in text.stdout

    assert apply(kit, pub, db_url, tmp_path / "a")[0] == 0
    with database.transaction():
        for i in range(100, 105):
            database.execute("INSERT INTO items (id, name, tenant) VALUES (:i, 'late', 't1')", {"i": i})
    code, dry, _ = apply(kit, pub, db_url, tmp_path / "a", "--dry-run", "--tenant", "t1")
    entry = next(p for p in dry["plan"] if p["kind"] == "backfill")
    assert (entry["countBasis"], entry["wouldUpdate"], entry["byTenant"]) == ("exact", 5, {"t1": 5})
    code, report, _ = apply(kit, pub, db_url, tmp_path / "a", "--tenant", "t1")
    assert code == 0, report.get("error")
    assert next(s for s in report["steps"] if s["id"] == "fill-done")["rowsThisRun"] == 5


def test_dry_run_with_artifacts_writes_hashed_evidence_marked_dry_run(
    tmp_path: Path, pub: Path, db_url: str, database: Database
) -> None:
    import hashlib

    items(database, 3)
    code, dry, _ = apply(kit_with_job(tmp_path, JOB), pub, db_url, tmp_path / "a", "--dry-run")
    assert code == 0
    evidence = Path(dry["evidence"]["directory"])
    body = (evidence / "report.json").read_bytes()
    assert (evidence / "report.json.sha256").read_text() == f"{hashlib.sha256(body).hexdigest()}  report.json\n"
    assert json.loads(body)["dryRun"] is True and json.loads(body)["status"] == "dry-run"
    assert not database.table_exists("kit_migrations")
    # Without --artifacts a dry run writes nothing at all.
    bare = run_kit("apply", kit_with_job(tmp_path, JOB, "k2"), "--key", pub, "--db", db_url, "--dry-run", "--json")
    assert bare.exit_code == 0 and "evidence" not in json.loads(bare.stdout)


def test_every_typed_result_field_fits_the_published_schema() -> None:
    """The report's to_json (all optional parts filled) against schemas/apply-report.schema.json."""
    from kitbuilder.apply import results
    from kitbuilder.apply.checks import CheckResult
    from kitbuilder.core.manifest import KitInfo

    check = CheckResult("c", "count", True, "halt", 3, 3, "before 3")
    backfill = results.BackfillResult(
        id="b",
        phase="1",
        checksum="0" * 64,
        table="t",
        batch_size=5,
        remaining_before=4,
        status="finished",
        remaining_after=0,
        rows_processed=4,
        rows_failed=0,
        resumed_from=None,
        cursor=4,
        batches=1,
        rows_this_run=4,
        duration_ms=12,
        rows_per_second=100.0,
        metric="t_pending",
        tenant="t1",
        pre_checks=(check,),
        post_checks=(check,),
        workers=2,
        ranges=(
            results.RangeProgress(0, None, 2, None, 2, 2, 0, 1, 2),
            results.RangeProgress(1, 2, None, 3, 4, 2, 0, 1, 1),
        ),
    )
    report = results.ApplyReport(
        run_id="a" * 32,
        argv=("kit",),
        dry_run=False,
        kit=results.AppliedKit(
            "k", "0" * 64, KitInfo("k", "1", 1, "2099-01-01T00:00:00Z", product="p", channel="stable")
        ),
        signers=("b" * 64,),
        verify_checks=("ok",),
        database=results.DatabaseInfo("sqlite", "3", "x.db"),
        status="succeeded",
        plan=(results.PlannedStep("b", "backfill", "1", "0" * 64),),
        steps=(
            results.MigrationResult("m", "1", "0" * 64, "succeeded", duration_ms=3, verify="passed"),
            results.SeedResult("s", "1", "0" * 64, "succeeded", rows=2, table="t", duration_ms=1),
            backfill,
        ),
        checks_before={"c": 3},
        checks_after=(check,),
        lock_wait_seconds=0.0,
        tenant="t1",
        deferred=results.Deferred(("x",), ("y",), "why"),
        evidence=results.Evidence("d", "0" * 64),
    )
    report.check_contract()
    dry = results.ApplyReport(
        run_id="a" * 32,
        argv=(),
        dry_run=True,
        kit=report.kit,
        signers=(),
        verify_checks=(),
        database=report.database,
        status="dry-run",
        plan=(
            results.DryStep("m", "migration", "1", "0" * 64, "pending", sql="SELECT 1"),
            results.DryBackfill(
                "b",
                "1",
                "0" * 64,
                "t",
                True,
                "x IS NULL",
                2,
                {"t1": 2},
                5,
                "current",
                "why",
                "pending",
                "UPDATE t SET x = 1",
                tenant="t1",
            ),
        ),
        evidence=results.Evidence("d-dry-run", "0" * 64),
    )
    dry.check_contract()
