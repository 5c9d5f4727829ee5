"""kit apply --workers N: a backfill's key ranges in parallel on PostgreSQL, each resumable as an unsplit job.

Children are killed, signalled or broken at exact points (KIT_FAULT, KIT_FAULT_SIGNAL,
a statement that ends its own connection), never after a sleep; every rerun must
leave each row applied exactly once, as an uninterrupted run does.
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
    kit = root / "workers.kit.tar.zst"
    built = run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit)
    assert built.exit_code == 0, built.output
    return Applier(kit, kit_env.ed_pub, root / "artifacts")


def _reference(applier: Applier, pg_server: Any) -> list[tuple[object, ...]]:
    """The rows an uninterrupted one-worker run leaves, in a database of its own."""
    url = str(pg_server.create_database(f"reference_{uuid.uuid4().hex[:12]}"))
    done = applier.run(url)
    assert done.returncode == 0, done.stderr
    database = connect(url)
    try:
        return items(database)
    finally:
        database.close()


def _one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def _bounds(database: Database) -> list[tuple[Any, Any]]:
    return [
        (None if lo is None else json.loads(str(lo)), None if hi is None else json.loads(str(hi)))
        for _, lo, hi in ranges(database)
    ]


def _in_range(lo: Any, hi: Any) -> tuple[str, dict[str, Any]]:
    """SQL for the keys of (lo, hi], compared by the database in the key's own type and order."""
    parts, params = ["TRUE"], {}
    if lo is not None:
        parts.append("id > :lo")
        params["lo"] = lo
    if hi is not None:
        parts.append("id <= :hi")
        params["hi"] = hi
    return " AND ".join(parts), params


@pytest.mark.parametrize("key", ["int", "text"])
def test_ranges_are_disjoint_cover_every_key_and_a_rerun_keeps_them(
    kit_env: KitEnv, pg_dsn: str, pg_server: Any, tmp_path: Path, key: str
) -> None:
    applier = _applier(kit_env, tmp_path, key)
    killed = applier.run(pg_dsn, "--workers", "3", env={"KIT_FAULT": "backfill-batch:1"})
    assert killed.returncode == 137, killed.stderr
    database = connect(pg_dsn)
    try:
        recorded = ranges(database)
        bounds = _bounds(database)
        assert [number for number, _, _ in recorded] == [0, 1, 2]
        assert bounds[0][0] is None and bounds[-1][1] is None
        assert [lo for lo, _ in bounds[1:]] == [hi for _, hi in bounds[:-1]]
        members = []
        for lo, hi in bounds:
            where, params = _in_range(lo, hi)
            members.append({row[0] for row in database.query(f"SELECT id FROM items WHERE {where}", params)})
        every = {row[0] for row in database.query("SELECT id FROM items")}
        # Every key in exactly one range: together they are the table, and their sizes add up to it.
        assert set().union(*members) == every and sum(map(len, members)) == len(every) == ROWS
        assert [len(m) for m in members] == [ROWS // 3] * 3  # cut at equal row counts

        # A rerun with another worker count resumes the recorded ranges, killed again part-way.
        again = applier.run(pg_dsn, "--workers", "2", env={"KIT_FAULT": "backfill-committed:5"})
        assert again.returncode == 137, again.stderr
        assert ranges(database) == recorded
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1

        # Part-way, kit status shows the split job range by range: each range's bounds and cursor (the job has none).
        shown = run_kit("status", "--db", pg_dsn, "--json")
        assert shown.exit_code == 0, shown.output
        status = json.loads(shown.stdout)
        schemas.validate("status-report", status, what="status report")
        (job,) = status["backfills"]
        assert job["cursor"] is None
        assert [(r["range"], r["lo"], r["hi"]) for r in job["ranges"]] == [
            (number, lo, hi) for number, (lo, hi) in zip([0, 1, 2], bounds, strict=True)
        ]
        assert sum(r["rowsProcessed"] for r in job["ranges"]) == job["rowsProcessed"] > 0
        assert all(r["cursor"] is not None for r in job["ranges"] if r["batches"])
        text = run_kit("status", "--db", pg_dsn)
        assert text.exit_code == 0 and "3 ranges" in text.stdout and "range 2 (" in text.stdout, text.output

        finished = applier.run(pg_dsn, "--json")
        assert finished.returncode == 0, finished.stderr
        report = json.loads(finished.stdout)
        schemas.validate("apply-report", report, what="apply report")
        (step,) = [s for s in report["steps"] if s["kind"] == "backfill"]
        assert step["workers"] == 1 and step["rowsProcessed"] == ROWS
        assert [(r["lo"], r["hi"]) for r in step["ranges"]] == [tuple(b) for b in bounds]
        assert [r["rowsProcessed"] for r in step["ranges"]] == [ROWS // 3] * 3  # each range's own rows, once
        assert_every_row_once(database)
        assert items(database) == _reference(applier, pg_server)
        assert ranges(database) == []  # a finished job's ranges go; its next run plans afresh
    finally:
        database.close()


@pytest.mark.parametrize(
    ("key", "range_no", "how"),
    [("int", 0, "KILL"), ("int", 2, "KILL"), ("text", 1, "KILL"), ("int", 1, "INT"), ("text", 2, "TERM")],
)
def test_a_stop_mid_batch_in_one_worker_then_a_rerun_converges(
    kit_env: KitEnv, pg_dsn: str, pg_server: Any, tmp_path: Path, key: str, range_no: int, how: str
) -> None:
    applier = _applier(kit_env, tmp_path, key)
    point = f"backfill-batch-range{range_no}:3"
    env = {"KIT_FAULT": point} if how == "KILL" else {"KIT_FAULT_SIGNAL": f"{how}@{point}"}
    stopped = applier.run(pg_dsn, "--workers", "3", env=env)
    assert stopped.returncode == {"KILL": 137, "INT": 130, "TERM": 143}[how], stopped.stderr
    if how != "KILL":
        _one_line(stopped.stderr)
        assert f"stopped by SIG{how}" in stopped.stderr and "rerun" in stopped.stderr
    database = connect(pg_dsn)
    try:
        assert database.query_value("SELECT COUNT(*) FROM items WHERE done IS NULL") > 0  # stopped part-way
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
        recorded = ranges(database)
        rerun = applier.run(pg_dsn, "--workers", "3", "--json")
        assert rerun.returncode == 0, rerun.stderr
        (step,) = [s for s in json.loads(rerun.stdout)["steps"] if s["kind"] == "backfill"]
        assert [r["range"] for r in step["ranges"]] == [n for n, _, _ in recorded]
        assert [r["rowsProcessed"] for r in step["ranges"]] == [ROWS // 3] * 3  # each range's own rows, once
        assert step["rowsProcessed"] == ROWS and step["rowsFailed"] == 0
        assert_every_row_once(database)
        assert items(database) == _reference(applier, pg_server)
        assert database.query_value("SELECT status FROM kit_backfill_runs WHERE job = 'touch'") == "finished"
    finally:
        database.close()


def test_a_driver_error_in_one_worker_stops_every_worker_and_exits_8(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    # Row 450 (the third range's second batch) ends its own connection while the trip table has a row.
    breaker = (
        "CASE WHEN id = 450 AND EXISTS (SELECT 1 FROM trip) THEN CAST(pg_terminate_backend(pg_backend_pid()) AS TEXT) "
        "ELSE 'v2:' || payload END"
    )
    applier = _applier(kit_env, tmp_path, done=breaker)
    database = connect(pg_dsn)
    try:
        database.execute("CREATE TABLE trip (x INTEGER)")
        database.execute("INSERT INTO trip VALUES (1)")
        broken = applier.run(pg_dsn, "--workers", "3")
        assert broken.returncode == 8, broken.stderr
        _one_line(broken.stderr)
        assert "backfill touch stopped at id=425 (range 3 of 3)" in broken.stderr, broken.stderr
        assert "rerun kit apply to resume" in broken.stderr
        assert database.query_value("SELECT status FROM kit_runs") == "failed"
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
        assert database.query_value("SELECT done FROM items WHERE id = 450") is None
        database.execute("DELETE FROM trip")
        rerun = applier.run(pg_dsn, "--workers", "3")
        assert rerun.returncode == 0, rerun.stderr
        assert_every_row_once(database)
    finally:
        database.close()


def test_sqlite_refuses_more_than_one_worker_before_any_statement(kit_env: KitEnv, tmp_path: Path) -> None:
    applier = _applier(kit_env, tmp_path)
    path = tmp_path / "site.db"
    refused = applier.run(f"sqlite:///{path}", "--workers", "2")
    assert refused.returncode == 2, refused.stderr
    _one_line(refused.stderr)
    assert "--workers 2" in refused.stderr and "SQLite" in refused.stderr and "--workers 1" in refused.stderr
    database = connect(f"sqlite:///{path}", create=False)
    try:
        assert not database.table_exists("kit_migrations") and not database.table_exists("items")
    finally:
        database.close()
    assert not (tmp_path / "artifacts").exists()


FAILS_AT_300 = "CASE WHEN id = 300 THEN CAST(CAST(payload AS INTEGER) AS TEXT) ELSE 'v2:' || payload END"


def test_a_row_error_in_one_range_is_bisected_and_quarantined_as_with_one_worker(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path, done=FAILS_AT_300)
    stopped = applier.run(pg_dsn, "--workers", "3", "--stop-on-error")
    assert stopped.returncode == 10, stopped.stderr
    _one_line(stopped.stderr)
    assert "stopped (--stop-on-error) at id=300" in stopped.stderr
    database = connect(pg_dsn)
    try:
        assert database.query_value("SELECT status FROM kit_backfill_runs WHERE job = 'touch'") == "failed"
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
        done = applier.run(pg_dsn, "--workers", "3", "--json")
        assert done.returncode == 0, done.stderr
        (step,) = [s for s in json.loads(done.stdout)["steps"] if s["kind"] == "backfill"]
        assert step["rowsFailed"] == 1 and step["remainingAfter"] == 1
        assert [r["rowsFailed"] for r in step["ranges"]] == [0, 1, 0]  # row 300 is in (200, 400]
        assert database.query("SELECT row_key FROM kit_backfill_quarantine WHERE job = 'touch'") == [("300",)]
        bad = database.query("SELECT id FROM items WHERE done IS DISTINCT FROM 'v2:' || payload OR attempts <> 1")
        assert bad == [(300,)]  # every other row exactly once; the failing one untouched
    finally:
        database.close()


def test_bisecting_a_batch_the_site_changed_meanwhile_quarantines_the_row_left(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    """A live table: between the failing batch and its bisection, the site finishes every row of the batch but
    the bad one. Halving a batch of one row repeated for ever (exit 70 by RecursionError); now that row is
    quarantined and the job goes on."""
    from tests.factories.apply_runs import wait_for

    applier = _applier(kit_env, tmp_path, done=FAILS_AT_300)
    gate = tmp_path / "go"
    run = applier.start(pg_dsn, "--json", env={"KIT_FAULT_WAIT": f"backfill-bisect:1:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), run)  # the batch (275, 300] failed and rolled back
        site = connect(pg_dsn)
        try:
            assert site.execute("UPDATE items SET done = 'site' WHERE id > 275 AND id < 300") == 24
        finally:
            site.close()
        gate.touch()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        gate.touch()
        if run.returncode is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, stderr
    (step,) = [s for s in json.loads(stdout)["steps"] if s["kind"] == "backfill"]
    assert step["rowsFailed"] == 1
    database = connect(pg_dsn)
    try:
        assert database.query("SELECT row_key FROM kit_backfill_quarantine WHERE job = 'touch'") == [("300",)]
        assert database.query("SELECT id FROM items WHERE done IS NULL") == [(300,)]
        assert database.query_value("SELECT COUNT(*) FROM items WHERE done = 'site'") == 24
        assert database.query_value("SELECT MAX(attempts) FROM items") == 1
    finally:
        database.close()
