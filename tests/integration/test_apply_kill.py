"""SIGKILL `kit apply` at many points; a rerun must converge on what an uninterrupted run gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kitbuilder.apply.db import Database, connect
from tests.conftest import KitEnv, run_kit

ROWS = 6000

SPEC = """\
apiVersion: kitbuilder/v1
name: kill-test
version: "1"
sequence: 1
expires: "2099-01-01"
product: test
migrations:
  - id: m1-schema
    phase: "1"
    source: src/m1
  - id: m2-bulk
    phase: "1"
    source: src/m2
backfills:
  - id: touch
    phase: "2"
    source: src/touch.yaml
seeds:
  - id: lookup
    phase: "3"
    source: src/seeds
    table: lookup
    key: [k]
"""

M1 = """\
CREATE TABLE items (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, payload TEXT NOT NULL,
    done TEXT, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE lookup (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""
M2 = f"""\
INSERT INTO items (id, tenant, payload)
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
  SELECT i, 't' || (i % 4), 'payload-' || i FROM n;
"""
JOB = """\
table: items
key: id
tenant_column: tenant
predicate: done IS NULL
set:
  done: "'v2:' || payload"
  attempts: "attempts + 1"
batch_size: 50
"""


def _write_source(root: Path) -> Path:
    (root / "src/m1").mkdir(parents=True)
    (root / "src/m2").mkdir(parents=True)
    (root / "src/seeds").mkdir(parents=True)
    (root / "src/m1/up.sql").write_text(M1)
    (root / "src/m1/verify.sql").write_text("SELECT COUNT(*) = 0 FROM lookup;\n")
    (root / "src/m2/up.sql").write_text(M2)
    (root / "src/m2/verify.sql").write_text(f"SELECT COUNT(*) = {ROWS} FROM items;\n")
    (root / "src/touch.yaml").write_text(JOB)
    (root / "src/seeds/lookup.ndjson").write_text("".join(f'{{"k": "k{i}", "v": "v{i}"}}\n' for i in range(20000)))
    spec = root / "kill.yaml"
    spec.write_text(SPEC)
    return spec


def _snapshot(database: Database) -> tuple[object, ...]:
    return (
        database.query("SELECT id, done, attempts FROM items ORDER BY id"),
        database.query("SELECT k, v FROM lookup ORDER BY k"),
        database.query("SELECT id, status, checksum FROM kit_migrations ORDER BY id"),
        database.query("SELECT job, status, rows_processed, rows_failed FROM kit_backfill_runs"),
    )


def _apply_command(kit: Path, pub: Path, db_url: str, artifacts: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kitbuilder.cli",
        "apply",
        str(kit),
        "--key",
        str(pub),
        "--db",
        db_url,
        "--artifacts",
        str(artifacts),
        "--quiet",
        "--lock-timeout",
        "20",
    ]


@pytest.mark.slow
def test_sigkill_at_many_points_then_rerun_converges(kit_env: KitEnv, db_url: str, tmp_path: Path) -> None:
    spec = _write_source(tmp_path / "kit")
    kit = tmp_path / "kill.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0

    # Reference: an uninterrupted run on its own database.
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    started = time.monotonic()
    done = subprocess.run(
        _apply_command(kit, kit_env.ed_pub, reference_url, tmp_path / "ref-artifacts"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    reference = connect(reference_url)
    expected_items, expected_lookup, _, _ = _snapshot(reference)
    reference.close()

    duration = time.monotonic() - started
    kills = 0
    # Kill points spread over one uninterrupted run's duration (start-up, migrations, batches, seeds).
    # Each killed run keeps its progress, so later runs have less left to do: the fractions grow slowly.
    delays = [duration * fraction for fraction in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95)]
    finished = False
    for delay in delays:
        with subprocess.Popen(
            _apply_command(kit, kit_env.ed_pub, db_url, tmp_path / "artifacts"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            time.sleep(delay)
            if process.poll() is not None:
                assert process.returncode == 0, process.stderr.read() if process.stderr else ""
                finished = True
                break
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
    if not finished:
        final = subprocess.run(
            _apply_command(kit, kit_env.ed_pub, db_url, tmp_path / "artifacts"), capture_output=True, text=True
        )
        assert final.returncode == 0, final.stderr
    assert kills >= 2, "the kit applied too fast to be interrupted; raise ROWS"
    import tempfile

    from kitbuilder.apply.lock import pid_alive

    leftovers = [
        p for p in Path(tempfile.gettempdir()).glob("kit-apply-*-*") if not pid_alive(int(p.name.split("-")[2]))
    ]
    assert leftovers == [], "staging dirs of killed runs must be cleaned by the next run"
    database = connect(db_url)
    items, lookup, migrations, backfills = _snapshot(database)
    assert items == expected_items  # every row processed exactly once (attempts == 1), none skipped
    assert {row[2] for row in items} == {1}
    assert lookup == expected_lookup
    assert {row[1] for row in migrations} == {"succeeded"}
    assert backfills == [("touch", "finished", ROWS, 0)]
    # Killed runs are marked interrupted by the run that takes the lock after them.
    statuses = {row[0] for row in database.query("SELECT DISTINCT status FROM kit_runs")}
    assert statuses <= {"succeeded", "interrupted"} and "succeeded" in statuses
    database.close()


def test_second_concurrent_apply_is_blocked_cleanly(kit_env: KitEnv, db_url: str, tmp_path: Path) -> None:
    spec = _write_source(tmp_path / "kit")
    kit = tmp_path / "kill.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    first = subprocess.Popen(
        _apply_command(kit, kit_env.ed_pub, db_url, tmp_path / "a1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        database = connect(db_url)
        deadline = time.monotonic() + 20
        # Wait until the first run holds the lock and is working.
        while time.monotonic() < deadline:
            if database.table_exists("kit_migrations") and database.query_value("SELECT COUNT(*) FROM kit_migrations"):
                break
            time.sleep(0.05)
        database.close()
        second = subprocess.run(
            [*_apply_command(kit, kit_env.ed_pub, db_url, tmp_path / "a2")[:-2], "--lock-timeout", "0.3"],
            capture_output=True,
            text=True,
        )
        if first.poll() is None:
            assert second.returncode == 9, second.stderr
            assert "another kit apply holds the lock" in second.stderr
            assert second.stderr.count("\n") == 1
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0


def test_database_going_away_mid_run_is_a_clear_error_and_rerun_resumes(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    spec = _write_source(tmp_path / "kit")
    kit = tmp_path / "kill.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    admin = connect(pg_dsn)
    try:
        _kill_connection_mid_backfill(kit, kit_env, pg_dsn, admin, tmp_path)
    finally:
        admin.close()


def _kill_connection_mid_backfill(kit: Path, kit_env: KitEnv, pg_dsn: str, admin: Database, tmp_path: Path) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    with subprocess.Popen(
        _apply_command(kit, kit_env.ed_pub, pg_dsn, tmp_path / "a"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if admin.table_exists("kit_backfill_batches") and admin.query_value(
                "SELECT COUNT(*) FROM kit_backfill_batches"
            ):
                break
            time.sleep(0.02)
        # The server drops the apply's connection, as a restart or failover would.
        admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()",
            {"d": dbname},
        )
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 8, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "rerun" in stderr or "connection" in stderr
    done = admin.query_value("SELECT rows_processed FROM kit_backfill_runs WHERE job = 'touch'")
    assert 0 < done < ROWS
    rerun = subprocess.run(_apply_command(kit, kit_env.ed_pub, pg_dsn, tmp_path / "a"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert admin.query_value("SELECT COUNT(*) FROM items WHERE attempts = 1") == ROWS
