"""An adversarial review of kit apply/status/rollback/repair: each test is named after a defect it found.

Every test asserts the correct behaviour (exit code, one line on stderr, the database equal
to an uninterrupted run); children are held or stopped at exact points with the
``kitbuilder.faults`` hooks, never with sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import (
    Applier,
    FaultKit,
    fault_kit_with_reference,
    snapshot_of,
    wait_for,
)
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review-keys")
    return write_pair(ed25519_key("release"), root / "release")


@pytest.fixture(scope="module")
def fault_kit(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> FaultKit:
    """The fault kit of tests/factories/apply_runs.py, its public key, and an uninterrupted run's snapshot."""
    return fault_kit_with_reference(tmp_path_factory.mktemp("review-kit"), *keys)


def _small_kit(root: Path, key: Path, name: str, migrations: dict[str, dict[str, str]], job: str | None = None) -> Path:
    """A kit of ``migrations`` (id -> {file: text, 'options': yaml lines}) in phases 1.., then ``job`` last."""
    entries = []
    for number, (step, files) in enumerate(migrations.items(), start=1):
        source = root / "src" / step
        source.mkdir(parents=True, exist_ok=True)
        for file, text in files.items():
            if file != "options":
                (source / file).write_text(text)
        entries.append(f'  - id: {step}\n    phase: "{number}"\n    source: src/{step}\n{files.get("options", "")}')
    spec = (
        f'apiVersion: kitbuilder/v1\nname: {name}\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\n'
        f"product: test\nmigrations:\n{''.join(entries)}"
    )
    if job is not None:
        (root / "src/job.yaml").write_text(job)
        spec += f'backfills:\n  - id: job\n    phase: "{len(migrations)}"\n    source: src/job.yaml\n'
    (root / "spec.yaml").write_text(spec)
    kit = root / f"{name}.kit.tar.zst"
    built = run_kit("build", root / "spec.yaml", "--key", key, "--out", kit)
    assert built.exit_code == 0, built.output
    return kit


def _communicate(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """The child's output once it ended; a child that does not end is killed (never left behind) and fails."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"the child did not stop within {timeout}s") from None


def _one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


# Locks -----------------------------------------------------------------------------------------------------------


def test_sqlite_lease_of_a_live_run_on_this_host_is_not_taken_over_when_it_expires(
    fault_kit: FaultKit, tmp_path: Path
) -> None:
    """A run whose lease ran out (a long statement renews nothing) but whose process lives keeps the lock.

    Before: a second apply took the expired lease of a live run on the same host and ran beside it;
    the first then wrote its stale totals over the job (rows_processed 150 of 600).
    """
    kit, pub, reference = fault_kit
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    gate = tmp_path / "go"
    first = Applier(kit, pub, tmp_path / "a1").start(db_url, env={"KIT_FAULT_WAIT": f"backfill-committed:3:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), first)
        with sqlite3.connect(tmp_path / "site.db", isolation_level=None) as probe:
            probe.execute("UPDATE kit_lock SET expires_at = '2000-01-01T00:00:00+00:00'")  # the lease ran out
        second = Applier(kit, pub, tmp_path / "a2").run(db_url, "--lock-timeout", "0.3")
        assert second.returncode == 9, second.stderr
        _one_line(second.stderr)
        assert f"pid {first.pid}" in second.stderr and "--release-lock" in second.stderr
    finally:
        gate.touch()
        _, stderr = _communicate(first, 120)
    assert first.returncode == 0, stderr
    assert snapshot_of(db_url) == reference


def _blocked_or_at_point(admin: Any, point: Path, process: subprocess.Popen[str]) -> None:
    """Until ``process`` is held at its fault point, or one of its statements waits for a lock of ours."""
    while not point.exists():
        if process.poll() is not None:
            raise AssertionError(f"child exited {process.returncode}: {process.communicate()[1]}")
        waiting = admin.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        ).fetchone()[0]
        if waiting:
            return
        admin.execute("SELECT pg_sleep(0.01)")


def test_pg_kit_sha256_function_is_created_only_with_the_apply_lock_held(
    fault_kit: FaultKit, pg_dsn: str, tmp_path: Path
) -> None:
    """Two runs starting together on a new database: the one waiting for the lock must not touch the catalog.

    Before: every connection ran CREATE OR REPLACE FUNCTION kit_sha256 before taking the lock, so a run
    starting while another created it failed with exit 8 'duplicate key value violates unique constraint
    "pg_proc_proname_args_nsp_index"' (or 'tuple concurrently updated').
    """
    import psycopg

    kit, pub, reference = fault_kit
    gate = tmp_path / "go"
    other = psycopg.connect(pg_dsn)  # another run, holding the lock while it creates the function
    admin = psycopg.connect(pg_dsn, autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", (0x4B4954,))
        other.execute(
            "CREATE FUNCTION kit_sha256(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
            "AS $$ SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') $$"
        )
        process = Applier(kit, pub, tmp_path / "a").start(
            pg_dsn, "--lock-timeout", "120", env={"KIT_FAULT_WAIT": f"lock-busy:{gate}"}
        )
        try:
            _blocked_or_at_point(admin, Path(f"{gate}.waiting"), process)
            other.commit()
            other.execute("SELECT pg_advisory_unlock(%s)", (0x4B4954,))
            other.commit()
        finally:
            gate.touch()
            _, stderr = _communicate(process, 120)
    finally:
        other.close()
        admin.close()
    assert process.returncode == 0, stderr
    assert snapshot_of(pg_dsn) == reference


# Evidence and the end of a run ------------------------------------------------------------------------------------


@pytest.fixture
def full_artifacts(tmp_path: Path) -> Iterator[Path]:
    """An --artifacts directory on a full tmpfs (root only). A read-only one is refused before the first statement.

    The directory itself can still be created (tmpfs needs no block for it): the first file write fails.
    """
    mount = tmp_path / "artifacts"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        with (mount / "filler").open("wb") as handle, pytest.raises(OSError):
            handle.write(b"\0" * (1 << 20))
            handle.flush()
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_evidence_that_cannot_be_written_still_records_the_run_and_releases_the_lock(
    fault_kit: FaultKit, db_url: str, full_artifacts: Path, tmp_path: Path
) -> None:
    """Before: report.json on a full disk raised past the recording: kit_runs stayed 'running', the SQLite
    lease stayed, and --json printed no report although every step had been applied."""
    kit, pub, reference = fault_kit
    result = Applier(kit, pub, full_artifacts).run(db_url, "--json")
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr)
    assert "the run succeeded in the database" in result.stderr and "evidence was not written" in result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["status"] == "succeeded" and report["error"]["exitCode"] == 12
    database = connect(db_url, create=False)
    try:
        assert database.query("SELECT status, report_sha256 FROM kit_runs") == [("succeeded", None)]
        if database.dialect == "sqlite":
            assert database.query("SELECT * FROM kit_lock") == []
    finally:
        database.close()
    assert snapshot_of(db_url) == reference


@pytest.mark.parametrize("hit", [1, 3])
def test_signal_while_the_evidence_is_written_does_not_leave_the_run_running(
    fault_kit: FaultKit, db_url: str, tmp_path: Path, hit: int
) -> None:
    """A signal after the last step is too late to stop anything: the run is recorded as it ended.

    Before: the signal made recording the run raise (exit 130 'the open transaction was rolled back'),
    so kit_runs stayed 'running' and the lease stayed, while report.json said 'succeeded'.
    """
    kit, pub, reference = fault_kit
    # --no-state: verify writes no anti-rollback file, so the N-th atomic rename is the N-th evidence file.
    result = Applier(kit, pub, tmp_path / "artifacts").run(
        db_url, "--json", "--no-state", env={"KIT_FAULT_SIGNAL": f"TERM@atomic-before-rename:{hit}"}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    evidence = json.loads((Path(report["evidence"]["directory"]) / "report.json").read_text())
    assert evidence["status"] == "succeeded"
    database = connect(db_url, create=False)
    try:
        assert database.query("SELECT status, report_sha256 FROM kit_runs") == [
            ("succeeded", report["evidence"]["reportSha256"])
        ]
        if database.dialect == "sqlite":
            assert database.query("SELECT * FROM kit_lock") == []
    finally:
        database.close()
    assert snapshot_of(db_url) == reference


# Backfill keys ----------------------------------------------------------------------------------------------------

_KEYED_TABLE = {
    "numeric": "id NUMERIC PRIMARY KEY",
    "timestamptz": "id TIMESTAMPTZ PRIMARY KEY",
    "uuid": "id UUID PRIMARY KEY",
}
_KEYED_ROWS = {
    "numeric": "g + 0.5",
    "timestamptz": "TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 hour'",
    "uuid": "md5(g::text)::uuid",
}
_TOUCH_JOB = (
    'table: t\nkey: id\npredicate: done IS NULL\nset:\n  done: "\'v2:\' || payload"\n  attempts: "attempts + 1"\n'
    "batch_size: 7\n"
)


@pytest.mark.parametrize("key_type", sorted(_KEYED_TABLE))
def test_pg_backfill_keyed_by_numeric_time_or_uuid_runs_and_resumes_after_a_kill(
    keys: tuple[Path, Path], pg_dsn: str, tmp_path: Path, key_type: str
) -> None:
    """Before: exit 70 'Object of type Decimal (datetime, UUID) is not JSON serializable' at the first batch."""
    up = (
        f"CREATE TABLE t ({_KEYED_TABLE[key_type]}, payload TEXT NOT NULL, done TEXT, "
        "attempts INTEGER NOT NULL DEFAULT 0 CHECK (payload <> 'poison' OR done IS NULL));\n"
        f"INSERT INTO t (id, payload) SELECT {_KEYED_ROWS[key_type]}, CASE WHEN g = 17 THEN 'poison' ELSE 'p' || g END "
        "FROM generate_series(1, 40) AS g;\n"
    )
    kit = _small_kit(tmp_path / "kit", keys[0], f"keyed-{key_type}", {"m1": {"up.sql": up}}, _TOUCH_JOB)
    applier = Applier(kit, keys[1], tmp_path / "artifacts")
    killed = applier.run(pg_dsn, env={"KIT_FAULT": "backfill-committed:3"})
    assert killed.returncode == 137, killed.stderr
    rerun = applier.run(pg_dsn, "--json")
    assert rerun.returncode == 0, rerun.stderr
    step = json.loads(rerun.stdout)["steps"][-1]
    assert step["status"] == "finished" and step["rowsProcessed"] == 39 and step["rowsFailed"] == 1
    database = connect(pg_dsn, create=False)
    try:
        assert database.query("SELECT attempts, COUNT(*) FROM t GROUP BY attempts ORDER BY attempts") == [
            (0, 1),
            (1, 39),
        ]
        assert database.query_value("SELECT COUNT(*) FROM kit_backfill_quarantine") == 1
    finally:
        database.close()
    status = run_kit("status", "--db", pg_dsn, "--json")
    assert status.exit_code == 0, status.output


def test_sqlite_backfill_keyed_by_a_blob_is_refused_in_one_line(keys: tuple[Path, Path], tmp_path: Path) -> None:
    """Before: exit 70 'Object of type bytes is not JSON serializable'."""
    up = (
        "CREATE TABLE t (id BLOB PRIMARY KEY, payload TEXT NOT NULL, done TEXT, attempts INTEGER NOT NULL DEFAULT 0);\n"
        "INSERT INTO t (id, payload) VALUES (x'01', 'a'), (x'02', 'b');\n"
    )
    kit = _small_kit(tmp_path / "kit", keys[0], "keyed-blob", {"m1": {"up.sql": up}}, _TOUCH_JOB)
    result = Applier(kit, keys[1], tmp_path / "artifacts").run(f"sqlite:///{tmp_path / 'site.db'}")
    assert result.returncode == 2, result.stderr
    _one_line(result.stderr)
    assert "key column t.id holds bytes values" in result.stderr
    with sqlite3.connect(tmp_path / "site.db") as probe:
        assert probe.execute("SELECT COUNT(*) FROM t WHERE done IS NOT NULL").fetchone() == (0,)
        assert probe.execute("SELECT status FROM kit_runs").fetchall() == [("failed",)]


# Secrets ----------------------------------------------------------------------------------------------------------


def test_libpq_key_value_string_as_db_is_refused_not_made_a_sqlite_file_named_after_the_password(
    fault_kit: FaultKit, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `--db "host=… password=…"` (libpq's other syntax) created a SQLite file of that name in the
    working directory, applied the whole kit to it (exit 0), and recorded the password in report.json."""
    kit, pub, _ = fault_kit
    secret = "Hunter2-conninfo"
    monkeypatch.chdir(tmp_path)
    conninfo = f"host=127.0.0.1 dbname={pg_dsn.rsplit('/', 1)[1]} user=postgres password={secret}"
    for args, env in (
        (("--db", conninfo), None),
        ((), {"KIT_DB_URL": conninfo}),
    ):
        result = run_kit("apply", kit, "--key", pub, *args, "--artifacts", tmp_path / "artifacts", "--json", env=env)
        assert result.exit_code == 2, result.output
        _one_line(result.stderr)
        assert "key=value connection string" in result.stderr and secret not in result.output + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database file, no evidence


@pytest.mark.parametrize(
    "userinfo", ["u:pa%zzss-Hunter2", "u:pa ss-Hunter2", "u:x@127.0.0.1:1/nowhere?password=pa%zz-Hunter2#"]
)
def test_password_that_libpq_quotes_in_a_connect_error_is_never_printed(userinfo: str, pg_server: Any) -> None:
    """Before: `invalid percent-encoded token: "pa%zzss-Hunter2"` (libpq quoting the password it could not
    decode) went verbatim to stderr and --json."""
    url = f"postgresql://{userinfo}"
    if "?" not in userinfo:
        url += f"@127.0.0.1:{pg_server.port}/nowhere"
    for command in (("status", "--db", url), ("status", "--db", url, "--json")):
        result = run_kit(*command)
        assert result.exit_code == 8, result.output
        _one_line(result.stderr)
        assert "Hunter2" not in result.stdout + result.stderr


# Rollback ---------------------------------------------------------------------------------------------------------


def test_pg_rollback_of_a_non_transactional_migration_runs_its_revert_outside_a_transaction(
    keys: tuple[Path, Path], pg_dsn: str, tmp_path: Path
) -> None:
    """Before: every revert ran in a transaction, so `DROP INDEX CONCURRENTLY` always failed (exit 8,
    'cannot run inside a transaction block'): a kit with a concurrent index could never be rolled back."""
    options = "    transactional: false\n    idempotent: true\n"
    kit = _small_kit(
        tmp_path / "kit",
        keys[0],
        "concurrent-revert",
        {
            "base": {
                "up.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);\n",
                "revert.sql": "DROP TABLE items;\n",
            },
            "ix": {
                "up.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_items_v ON items (v);\n",
                "revert.sql": "DROP INDEX CONCURRENTLY IF EXISTS ix_items_v;\n",
                "verify.sql": "SELECT COUNT(*) = 1 FROM pg_indexes WHERE indexname = 'ix_items_v';\n",
                "options": options,
            },
        },
    )
    applied = Applier(kit, keys[1], tmp_path / "artifacts").run(pg_dsn)
    assert applied.returncode == 0, applied.stderr
    rollback = ("rollback", kit, "--key", keys[1], "--db", pg_dsn, "--to-phase", "1")
    # Killed right after the index was dropped, before the state row changed: the rerun reverts again.
    killed = subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, rollback)],
        capture_output=True,
        text=True,
        env={**os.environ, "KIT_FAULT": "revert-statement:1"},
        timeout=120,
    )
    assert killed.returncode == 137, killed.stderr
    result = run_kit(*rollback, "--json")
    assert result.exit_code == 0, result.output
    assert [step["id"] for step in json.loads(result.stdout)["reverted"]] == ["ix"]
    database = connect(pg_dsn, create=False)
    try:
        assert database.query_value("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'ix_items_v'") == 0
        assert database.query_value("SELECT status FROM kit_migrations WHERE id = 'ix'") == "reverted"
    finally:
        database.close()
    again = Applier(kit, keys[1], tmp_path / "artifacts").run(pg_dsn)  # and it applies again
    assert again.returncode == 0, again.stderr


# Signals while kit waits in the database --------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sigint_while_waiting_for_a_sqlite_write_lock_stops_before_the_lock_timeout(
    fault_kit: FaultKit, tmp_path: Path
) -> None:
    """Before: SQLite's busy wait runs in C, where no signal handler runs: Ctrl-C did nothing until
    --lock-timeout (here an hour) had passed."""
    kit, pub, reference = fault_kit
    path = tmp_path / "site.db"
    gate = tmp_path / "go"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE other_app (x)")
        holder.execute("BEGIN IMMEDIATE")  # another program holds a write transaction
        process = Applier(kit, pub, tmp_path / "artifacts").start(
            f"sqlite:///{path}", "--lock-timeout", "3600", env={"KIT_FAULT_WAIT": f"sqlite-busy:1:{gate}"}
        )
        try:
            wait_for(Path(f"{gate}.waiting"), process)  # it found the database busy and keeps waiting
            process.send_signal(signal.SIGINT)
        finally:
            gate.touch()
            _, stderr = _communicate(process, 60)
        assert process.returncode == 130, stderr
        _one_line(stderr)
        assert "stopped by SIGINT" in stderr
    finally:
        holder.close()
    rerun = Applier(kit, pub, tmp_path / "artifacts").run(f"sqlite:///{path}")
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot_of(f"sqlite:///{path}") == reference


_ENDLESS = {
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n;\n",
    "postgresql": "SELECT pg_sleep(3600);\n",
}


@pytest.mark.parametrize("signal_name", ["INT", "TERM"])
def test_signal_during_a_long_migration_statement_stops_it_and_rolls_it_back(
    keys: tuple[Path, Path], db_url: str, tmp_path: Path, signal_name: str
) -> None:
    """Before (SQLite): a statement running in C never saw the signal: the run went on until it ended."""
    dialect = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    up = "CREATE TABLE marker (x INTEGER);\nINSERT INTO marker VALUES (1);\n" + _ENDLESS[dialect]
    kit = _small_kit(tmp_path / "kit", keys[0], "endless", {"m1": {"up.sql": up}})
    gate = tmp_path / "go"
    applier = Applier(kit, keys[1], tmp_path / "artifacts")
    process = applier.start(db_url, "--json", env={"KIT_FAULT_WAIT": f"migration-statement:3:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), process)
        gate.touch()
        start = _cpu_seconds(process.pid)
        if dialect == "postgresql":
            import psycopg

            with psycopg.connect(db_url, autocommit=True) as admin:
                while not admin.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3600)%' "
                    "AND state = 'active'"
                ).fetchone()[0]:
                    assert process.poll() is None
        else:
            while _cpu_seconds(process.pid) - start < 0.3:  # spinning inside the endless statement
                assert process.poll() is None
        process.send_signal(getattr(signal, f"SIG{signal_name}"))
    finally:
        gate.touch()
        stdout, stderr = _communicate(process, 60)
    assert process.returncode == {"INT": 130, "TERM": 143}[signal_name], stderr
    _one_line(stderr)
    assert json.loads(stdout)["status"] == "interrupted"
    database = connect(db_url, create=False)
    try:
        assert not database.table_exists("marker")  # the migration's transaction rolled back whole
        assert database.query_value("SELECT status FROM kit_runs") == "interrupted"
        assert database.query("SELECT * FROM kit_migrations") == []
    finally:
        database.close()


# State edited by hand ---------------------------------------------------------------------------------------------


def test_unknown_migration_status_is_exit_8_naming_repair_not_resolved_by_verify(
    fault_kit: FaultKit, db_url: str, tmp_path: Path
) -> None:
    """Before: a kit_migrations status kit does not know (the CHECK dropped or ignored, then edited) was read as
    'interrupted' and silently rewritten 'succeeded' because the verify query passed."""
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    assert applier.run(db_url).returncode == 0
    database = connect(db_url, create=False)
    try:
        if database.dialect == "sqlite":
            database.execute("PRAGMA ignore_check_constraints = ON")
        else:
            database.execute("ALTER TABLE kit_migrations DROP CONSTRAINT kit_migrations_status_check")
        database.execute("UPDATE kit_migrations SET status = 'bogus' WHERE id = 'm2-rows'")
    finally:
        database.close()
    for result in (
        run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--quiet"),
        run_kit("status", "--db", db_url),
    ):
        assert result.exit_code == 8, result.output
        _one_line(result.stderr)
        assert "status of m2-rows is 'bogus'" in result.stderr and "--resolve m2-rows" in result.stderr
    repaired = run_kit(
        "repair", kit, "--key", pub, "--db", db_url, "--resolve", "m2-rows", "--as", "succeeded", "--reason", "checked"
    )
    assert repaired.exit_code == 0, repaired.output
    rerun = applier.run(db_url)
    assert rerun.returncode == 0, rerun.stderr
    assert snapshot_of(db_url) == reference
