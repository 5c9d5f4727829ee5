"""kit apply --workers N under attack: odd keys, odd tables, the server's limits, other writers, repair and status.

Every case is driven by a real PostgreSQL (tests/pgserver.py) and deterministic
fault points; the oracle is an uninterrupted run: every row applied exactly
once (the kit counts updates per row), one line on stderr with a documented
exit code, no traceback.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import Database, connect
from kitbuilder.core import schemas
from tests.factories.apply_runs import Applier
from tests.factories.backfill_kits import ROWS, assert_every_row_once, items, ranges, write_kit_source
from tests.factories.cli import KitEnv, run_kit


def _applier(kit_env: KitEnv, root: Path, key: str = "int", **source: Any) -> Applier:
    spec = write_kit_source(root / "src", key, **source)
    kit = root / "attack.kit.tar.zst"
    built = run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit)
    assert built.exit_code == 0, built.output
    return Applier(kit, kit_env.ed_pub, root / "artifacts")


def _one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def _step(stdout: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [s for s in json.loads(stdout)["steps"] if s["kind"] == "backfill"]
    (step,) = steps
    return step


@pytest.mark.parametrize("workers", ["1", "3"])
def test_rows_with_a_null_key_are_refused_before_any_row_changes_never_looped(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path, workers: str
) -> None:
    # A unique key column may hold NULLs: keyset pagination cannot reach those rows (a batch ending in NULL
    # kept its cursor at the start forever with one worker; no range held them with several).
    applier = _applier(
        kit_env,
        tmp_path,
        constraint="UNIQUE",
        extra_sql="INSERT INTO items (id, tenant, payload) VALUES (NULL, 't1', 'n1'), (NULL, 't2', 'n2');\n",
    )
    refused = applier.run(pg_dsn, "--workers", workers)
    assert refused.returncode == 10, refused.stderr
    _one_line(refused.stderr)
    assert "2 rows" in refused.stderr and "id NULL" in refused.stderr and "id IS NOT NULL" in refused.stderr
    database = connect(pg_dsn)
    try:
        assert database.query_value("SELECT COUNT(*) FROM items WHERE attempts <> 0") == 0
        # The operator gives them keys; the rerun applies every row once.
        database.execute("UPDATE items SET id = -1 WHERE payload = 'n1'")
        database.execute("UPDATE items SET id = 100000 WHERE payload = 'n2'")
        done = applier.run(pg_dsn, "--workers", workers)
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database, ROWS + 2)
    finally:
        database.close()


def test_a_null_key_row_inserted_while_a_split_job_runs_stops_it_by_name(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path, constraint="UNIQUE")
    killed = applier.run(pg_dsn, "--workers", "3", env={"KIT_FAULT": "backfill-committed:4"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        database.execute("INSERT INTO items (id, tenant, payload) VALUES (NULL, 't0', 'late')")
        stopped = applier.run(pg_dsn, "--workers", "2")
        assert stopped.returncode == 10, stopped.stderr
        _one_line(stopped.stderr)
        assert "1 rows" in stopped.stderr and "id NULL" in stopped.stderr
        database.execute("DELETE FROM items WHERE id IS NULL")
        done = applier.run(pg_dsn, "--workers", "2")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database)
    finally:
        database.close()


def test_worker_connections_over_the_servers_limit_are_an_environment_error_naming_workers(
    kit_env: KitEnv, pg_server: Any, tmp_path: Path
) -> None:
    # A role allowed two connections: the run's own and one worker's. Superusers ignore such limits.
    role = f"limited_{uuid.uuid4().hex[:8]}"
    admin = connect(str(pg_server.create_database(f"admin_{uuid.uuid4().hex[:8]}")))
    try:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    finally:
        admin.close()
    dsn = f"postgresql://{role}@127.0.0.1:{pg_server.port}/{role}"
    applier = _applier(kit_env, tmp_path)
    refused = applier.run(dsn, "--workers", "3")
    assert refused.returncode == 8, refused.stderr
    _one_line(refused.stderr)
    assert "--workers 3" in refused.stderr and "max_connections" in refused.stderr, refused.stderr
    assert "lower --workers" in refused.stderr
    database = connect(dsn)
    try:
        assert database.query_value("SELECT COUNT(*) FROM items WHERE attempts <> 0") == 0
        assert database.query_value("SELECT status FROM kit_runs") == "failed"
    finally:
        database.close()
    done = applier.run(dsn, "--workers", "1")
    assert done.returncode == 0, done.stderr
    database = connect(dsn)
    try:
        assert_every_row_once(database)
    finally:
        database.close()


def test_a_kill_between_recording_the_ranges_and_the_first_batch_then_another_worker_count(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path)
    killed = applier.run(pg_dsn, "--workers", "4", env={"KIT_FAULT": "backfill-ranges-recorded"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        recorded = ranges(database)
        assert len(recorded) == 4
        assert database.query_value("SELECT COUNT(*) FROM items WHERE attempts <> 0") == 0
        interrupted = applier.run(pg_dsn, "--workers", "2", env={"KIT_FAULT_SIGNAL": "TERM@backfill-ranges-recorded"})
        assert interrupted.returncode == 143, interrupted.stderr
        _one_line(interrupted.stderr)
        assert ranges(database) == recorded
        done = applier.run(pg_dsn, "--workers", "2")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database)
    finally:
        database.close()


def test_rows_inserted_and_deleted_by_others_between_runs_inside_and_outside_the_ranges(
    kit_env: KitEnv, pg_dsn: str, pg_server: Any, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path)
    killed = applier.run(pg_dsn, "--workers", "3", env={"KIT_FAULT": "backfill-committed:9"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        # Below the first cut, above the last, behind every range's cursor; some rows go, done and not done.
        database.execute(
            "INSERT INTO items (id, tenant, payload) SELECT i, 't0', 'late-' || i "
            "FROM unnest(ARRAY[-7, 0, 1000, 5000, 2, 3]) i WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = i)"
        )
        database.execute("DELETE FROM items WHERE id IN (2, 3)")  # done, or not
        database.execute("INSERT INTO items (id, tenant, payload) VALUES (2, 't0', 'back-2')")
        database.execute("DELETE FROM items WHERE id IN (250, 599)")
        total = database.query_value("SELECT COUNT(*) FROM items")
        rerun = applier.run(pg_dsn, "--workers", "2", env={"KIT_FAULT": "backfill-committed:3"})
        assert rerun.returncode == 137, rerun.stderr
        done = applier.run(pg_dsn, "--workers", "4")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database, total)
    finally:
        database.close()


@pytest.mark.parametrize(("rows", "workers", "batch"), [(0, "4", "25"), (1, "4", "25"), (3, "60", "1"), (5, "2", "1")])
def test_tiny_tables_and_more_workers_than_rows(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path, rows: int, workers: str, batch: str
) -> None:
    applier = _applier(kit_env, tmp_path, rows=rows)
    done = applier.run(pg_dsn, "--workers", workers, "--batch-size", batch, "--json")
    assert done.returncode == 0, done.stderr
    step = _step(done.stdout)
    assert step["rowsProcessed"] == rows and step["remainingAfter"] == 0
    schemas.validate("apply-report", json.loads(done.stdout), what="apply report")
    database = connect(pg_dsn)
    try:
        assert_every_row_once(database, rows)
        assert ranges(database) == []
    finally:
        database.close()


def test_text_keys_under_a_linguistic_collation_split_and_resume_in_the_columns_order(
    kit_env: KitEnv, pg_dsn: str, pg_server: Any, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path, "icu")
    killed = applier.run(pg_dsn, "--workers", "3", env={"KIT_FAULT": "backfill-batch-range1:3"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        members = []
        for _, lo, hi in ranges(database):
            where, params = ["TRUE"], {}
            if lo is not None:
                where.append("id > :lo")
                params["lo"] = json.loads(str(lo))
            if hi is not None:
                where.append("id <= :hi")
                params["hi"] = json.loads(str(hi))
            members.append(database.query_value(f"SELECT COUNT(*) FROM items WHERE {' AND '.join(where)}", params))
        assert members == [ROWS // 3] * 3
        done = applier.run(pg_dsn, "--workers", "2")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database)
        reference = str(pg_server.create_database(f"reference_{uuid.uuid4().hex[:12]}"))
        assert applier.run(reference).returncode == 0
        other = connect(reference)
        try:
            assert items(database) == items(other)
        finally:
            other.close()
    finally:
        database.close()


FAILS_AT_300 = "CASE WHEN id = 300 THEN CAST(CAST(payload AS INTEGER) AS TEXT) ELSE 'v2:' || payload END"


def test_a_row_error_in_one_worker_and_a_lost_connection_in_another(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    breaker = (
        "CASE WHEN id = 450 AND EXISTS (SELECT 1 FROM trip) THEN CAST(pg_terminate_backend(pg_backend_pid()) AS TEXT) "
        "WHEN id = 300 THEN CAST(CAST(payload AS INTEGER) AS TEXT) ELSE 'v2:' || payload END"
    )
    applier = _applier(
        kit_env, tmp_path, done=breaker, extra_sql="CREATE TABLE trip (x INTEGER);\nINSERT INTO trip VALUES (1);\n"
    )
    stopped = applier.run(pg_dsn, "--workers", "3")
    assert stopped.returncode == 8, stopped.stderr  # the systemic error decides; the row error is quarantined
    _one_line(stopped.stderr)
    assert "(range 3 of 3)" in stopped.stderr and "rerun kit apply to resume" in stopped.stderr
    database = connect(pg_dsn)
    try:
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
        database.execute("DELETE FROM trip")
        done = applier.run(pg_dsn, "--workers", "3", "--json")
        assert done.returncode == 0, done.stderr
        step = _step(done.stdout)
        assert step["rowsFailed"] == 1 and step["rowsProcessed"] == ROWS - 1
        assert database.query("SELECT row_key FROM kit_backfill_quarantine") == [("300",)]
        bad = database.query("SELECT id FROM items WHERE done IS DISTINCT FROM 'v2:' || payload OR attempts <> 1")
        assert bad == [(300,)]
    finally:
        database.close()


def test_a_lock_held_by_another_session_past_the_servers_lock_timeout_names_the_range(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path, extra_sql="CREATE TABLE hold (x INTEGER);\n")
    database = connect(pg_dsn)
    holder = connect(pg_dsn)
    try:
        database.execute(f"ALTER DATABASE {pg_dsn.rsplit('/', 1)[1]} SET lock_timeout = '300ms'")
        first = applier.run(pg_dsn, "--workers", "3", env={"KIT_FAULT": "backfill-batch-range0:1"})
        assert first.returncode == 137, first.stderr  # the schema is there, nothing applied yet
        with holder.transaction():
            holder.query("SELECT id FROM items WHERE id = 460 FOR UPDATE")
            stopped = applier.run(pg_dsn, "--workers", "3")
        assert stopped.returncode == 8, stopped.stderr
        _one_line(stopped.stderr)
        assert "(range 3 of 3)" in stopped.stderr and "lock timeout" in stopped.stderr, stopped.stderr
        assert "another connection holds a lock" in stopped.stderr
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
        done = applier.run(pg_dsn, "--workers", "3")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database)
    finally:
        holder.close()
        database.close()


def test_status_and_reset_cursor_on_a_split_job_then_a_tenant_split(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path)
    # A tenant's rows split into ranges, killed part-way, resumed with another worker count.
    killed = applier.run(pg_dsn, "--tenant", "t1", "--workers", "3", env={"KIT_FAULT": "backfill-committed:2"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        job = "touch[tenant=t1]"
        assert len(database.query("SELECT 1 FROM kit_backfill_ranges WHERE job = :j", {"j": job})) == 3
        status = run_kit("status", "--db", pg_dsn, "--json")
        assert status.exit_code == 0, status.output
        document = json.loads(status.output)
        schemas.validate("status-report", document, what="status report")
        (entry,) = [b for b in document["backfills"] if b["job"] == job]
        assert entry["status"] == "active" and 0 < entry["rowsProcessed"] < ROWS // 3
        repaired = run_kit("repair", "--db", pg_dsn, "--reset-cursor", "touch", "--reason", "attack")
        assert repaired.exit_code == 0, repaired.output
        assert (
            database.query("SELECT cursor_value FROM kit_backfill_ranges WHERE job = :j", {"j": job}) == [(None,)] * 3
        )
        tenant = applier.run(pg_dsn, "--tenant", "t1", "--workers", "2", "--json")
        assert tenant.returncode == 0, tenant.stderr
        assert _step(tenant.stdout)["rowsProcessed"] == ROWS // 3
        assert_every_row_once(database, where="tenant = 't1'")
        assert database.query_value("SELECT COUNT(*) FROM items WHERE tenant <> 't1' AND attempts <> 0") == 0
        full = applier.run(pg_dsn, "--workers", "3")
        assert full.returncode == 0, full.stderr
        assert_every_row_once(database)
        assert database.query_value("SELECT COUNT(*) FROM kit_backfill_ranges") == 0
    finally:
        database.close()


def _cursors_match_applied_rows(database: Database, workers: str) -> int:
    """Each recorded cursor is the last key its batches applied, as the database compares keys; how many moved."""
    if workers == "1":
        cursors = database.query("SELECT NULL, NULL, cursor_value FROM kit_backfill_runs WHERE job = 'touch'")
    else:
        cursors = database.query(
            "SELECT lo_value, hi_value, cursor_value FROM kit_backfill_ranges WHERE job = 'touch' ORDER BY range_no"
        )
    moved = 0
    for lo, hi, cursor in cursors:
        where, params = ["done IS NOT NULL"], {}
        if lo is not None:
            where.append("id > :lo")
            params["lo"] = json.loads(str(lo))
        if hi is not None:
            where.append("id <= :hi")
            params["hi"] = json.loads(str(hi))
        last = database.query_value(
            f"SELECT CAST(id AS TEXT) AS k FROM items WHERE {' AND '.join(where)} ORDER BY items.id DESC LIMIT 1",
            params,
        )
        if cursor is None:
            assert last is None
            continue
        moved += 1
        same = "SELECT COUNT(*) FROM items WHERE id = :c AND CAST(id AS TEXT) = :last"
        assert database.query_value(same, {"c": json.loads(str(cursor)), "last": last}) == 1, (cursor, last)
    return moved


@pytest.mark.parametrize("key", ["uuid", "numeric", "timestamptz", "unicode", "text"])
@pytest.mark.parametrize("workers", ["1", "3"])
def test_the_cursor_a_batch_records_in_its_own_statement_resumes_every_key_type(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path, key: str, workers: str
) -> None:
    applier = _applier(kit_env, tmp_path, key)
    killed = applier.run(pg_dsn, "--workers", workers, env={"KIT_FAULT": "backfill-committed:3"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        # A statement in flight when the client died still commits, whole, on the server (autocommit): the rows
        # and the cursor are read in one snapshot, where each batch is all there or not at all.
        with database.transaction():
            database.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            moved = _cursors_match_applied_rows(database, workers)
        assert moved >= 1
        done = applier.run(pg_dsn, "--workers", "2")
        assert done.returncode == 0, done.stderr
        assert_every_row_once(database)
    finally:
        database.close()
