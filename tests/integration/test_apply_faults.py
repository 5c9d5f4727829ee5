"""Faults an admin meets on day one: a full disk, state rows that lie, a lock left by another host,
a hot journal after a kill, credentials on the command line. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import (
    ROWS,
    Applier,
    FaultKit,
    fault_kit_with_reference,
    snapshot_of,
    wait_for,
)
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair


@pytest.fixture(scope="module")
def fault_kit(tmp_path_factory: pytest.TempPathFactory) -> FaultKit:
    root = tmp_path_factory.mktemp("faults-kit")
    return fault_kit_with_reference(root, *write_pair(ed25519_key("release"), root / "release"))


def _apply(applier: Applier, db_url: str, *extra: str) -> tuple[int, str]:
    result = run_kit(
        "apply", applier.kit, "--key", applier.pub, "--db", db_url, "--artifacts", applier.artifacts, "--quiet", *extra
    )
    return result.exit_code, result.stderr


def _stop_mid_backfill(applier: Applier, db_url: str) -> None:
    """A run killed after three committed batches: the job is active with a cursor."""
    assert applier.run(db_url, env={"KIT_FAULT": "backfill-committed:3"}).returncode == 137


# Disk full ------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only): the database's disk, to be filled."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    """Fill ``mount`` until only about ``leave`` bytes are free."""
    filler = mount / "filler"
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full_mid_backfill_quarantines_nothing_and_rerun_resumes_exactly(
    fault_kit: tuple[Path, Path, tuple[object, ...]], small_disk: Path, tmp_path: Path
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    db_url = f"sqlite:///{small_disk / 'site.db'}"
    gate = tmp_path / "go"
    # Held at the start of the backfill (steps: m1, m2, touch, …), the disk is filled under it.
    process = applier.start(db_url, env={"KIT_FAULT_WAIT": f"step-start:3:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), process)
        filler = _fill(small_disk, leave=32 * 1024)
    finally:
        gate.touch()
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 8, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "full" in stderr and "nothing was quarantined" in stderr
    database = connect(db_url, create=False, read_only=True)
    try:
        assert database.query_value("SELECT COUNT(*) FROM kit_backfill_quarantine") == 0
        processed = database.query_value("SELECT rows_processed FROM kit_backfill_runs WHERE job = 'touch'")
        assert processed < ROWS
        # No row lost: every row the cursor passed is done, none after it.
        assert database.query_value("SELECT COUNT(*) FROM items WHERE done IS NOT NULL") == processed
    finally:
        database.close()
    filler.unlink()
    code, stderr = _apply(applier, db_url)
    assert code == 0, stderr
    assert snapshot_of(db_url) == reference


# State that lies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["{oops", "[" * 5000], ids=["broken", "nested-past-the-recursion-limit"])
def test_cursor_that_is_not_json_is_exit_8_naming_repair(
    fault_kit: tuple[Path, Path, tuple[object, ...]], db_url: str, tmp_path: Path, text: str
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    _stop_mid_backfill(applier, db_url)
    database = connect(db_url, create=False)
    database.execute("UPDATE kit_backfill_runs SET cursor_value = :text WHERE job = 'touch'", {"text": text})
    database.close()
    for result in (
        run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--quiet"),
        run_kit("status", "--db", db_url),
    ):
        assert result.exit_code == 8, result.output
        assert result.stderr.count("\n") == 1 and "--reset-cursor touch" in result.stderr
        assert "not valid JSON" in result.stderr
    repaired = run_kit("repair", "--db", db_url, "--reset-cursor", "touch", "--reason", "cursor edited by hand")
    assert repaired.exit_code == 0, repaired.output
    code, stderr = _apply(applier, db_url)
    assert code == 0, stderr
    assert snapshot_of(db_url) == reference  # restarting from the first matching row processed nothing twice


def test_cursor_past_the_end_does_not_finish_the_job_with_rows_left(
    fault_kit: tuple[Path, Path, tuple[object, ...]], db_url: str, tmp_path: Path
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    _stop_mid_backfill(applier, db_url)
    database = connect(db_url, create=False)
    database.execute("UPDATE kit_backfill_runs SET cursor_value = '999999' WHERE job = 'touch'")
    database.close()
    code, stderr = _apply(applier, db_url)
    assert code == 0, stderr
    assert snapshot_of(db_url) == reference  # every row processed once, found by the rescan


def test_status_shows_decoded_cursor_rate_remaining_and_eta(
    fault_kit: tuple[Path, Path, tuple[object, ...]], db_url: str, tmp_path: Path
) -> None:
    kit, pub, _ = fault_kit
    _stop_mid_backfill(Applier(kit, pub, tmp_path / "artifacts"), db_url)
    result = run_kit("status", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["backfills"][0]
    assert job["cursor"] == 150 and job["rowsProcessed"] == 150 and job["status"] == "active"
    assert job["remaining"] == ROWS - 150
    assert job["rowsPerSecond"] > 0 and job["etaSeconds"] is not None
    text = run_kit("status", "--db", db_url)
    assert "cursor 150" in text.stdout and f"{ROWS - 150} remaining" in text.stdout and "ETA" in text.stdout


# Locks and journals ----------------------------------------------------------------------------------------------


def test_lease_left_by_another_host_names_repair_which_releases_it(
    fault_kit: tuple[Path, Path, tuple[object, ...]], tmp_path: Path
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    database = connect(db_url)
    database.execute(
        "CREATE TABLE kit_lock (name TEXT PRIMARY KEY, holder TEXT NOT NULL, host TEXT NOT NULL, "
        "pid INTEGER NOT NULL, expires_at TEXT NOT NULL)"
    )
    database.execute(
        "INSERT INTO kit_lock VALUES ('kit-apply', 'deadbeef', :host, 4242, '2999-01-01T00:00:00+00:00')",
        {"host": socket.gethostname() + "-elsewhere"},
    )
    database.close()
    code, stderr = _apply(applier, db_url, "--lock-timeout", "0.2")
    assert code == 9 and stderr.count("\n") == 1
    assert "--release-lock" in stderr and "deadbeef" in stderr
    repaired = run_kit("repair", "--db", db_url, "--release-lock", "--reason", "that host was reimaged", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert "deadbeef" in json.loads(repaired.stdout)["detail"]
    code, stderr = _apply(applier, db_url)
    assert code == 0, stderr
    assert snapshot_of(db_url) == reference
    database = connect(db_url, create=False)
    assert database.query_value("SELECT COUNT(*) FROM kit_events WHERE event = 'repair' AND subject = 'kit_lock'") == 1
    database.close()


def test_status_and_dry_run_work_after_sigkill_left_a_hot_journal(
    fault_kit: tuple[Path, Path, tuple[object, ...]], tmp_path: Path
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    path = tmp_path / "site.db"
    assert applier.run(f"sqlite:///{path}", env={"KIT_FAULT": "backfill-batch:3"}).returncode == 137
    assert Path(f"{path}-journal").exists()  # killed inside a transaction: a hot journal
    status = run_kit("status", "--db", path, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["backfills"][0]["rowsProcessed"] == 100  # the open batch was rolled back
    dry = run_kit("apply", kit, "--key", pub, "--db", path, "--dry-run", "--artifacts", tmp_path / "dry")
    assert dry.exit_code == 0, dry.output
    code, stderr = _apply(applier, str(path))
    assert code == 0, stderr
    assert snapshot_of(f"sqlite:///{path}") == reference


# Secrets --------------------------------------------------------------------------------------------------------


def test_database_password_is_never_recorded(
    fault_kit: tuple[Path, Path, tuple[object, ...]], pg_dsn: str, tmp_path: Path
) -> None:
    kit, pub, _ = fault_kit
    secret = "s3cr3t-Pa55"
    url = pg_dsn.replace("postgres@", f"postgres:{secret}@")  # the test server trusts; libpq sends it unasked-for
    result = Applier(kit, pub, tmp_path / "a").run(url, "--json")  # a child process: its real argv is recorded
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "postgres:***@" in " ".join(report["argv"]) and "***" in report["database"]["url"]
    evidence = Path(report["evidence"]["directory"])
    assert all(secret not in p.read_text() for p in evidence.iterdir())
    database = connect(pg_dsn)
    assert all(secret not in argv for (argv,) in database.query("SELECT argv FROM kit_runs"))
    database.close()
    status = run_kit("status", "--json", env={"KIT_DB_URL": url})
    assert status.exit_code == 0 and secret not in status.output
    unreachable = url.rsplit("/", 1)[0].rsplit(":", 1)[0] + ":1/nowhere"
    failed = run_kit("status", "--db", unreachable)
    assert failed.exit_code == 8 and secret not in failed.output and secret not in failed.stderr
