"""Two `kit apply` on the same database at once, held at exact points by KIT_FAULT_WAIT (no sleeps)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import Applier, build_fault_kit, snapshot_of, wait_for
from tests.factories.keys import ed25519_key, write_pair


@pytest.fixture(scope="module")
def applier_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("concurrency-kit")
    key, pub = write_pair(ed25519_key("release"), root / "release")
    return build_fault_kit(root, key), pub


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_two_applies_on_a_fresh_database_one_waits_for_the_other(
    applier_parts: tuple[Path, Path], db_url: str, tmp_path: Path
) -> None:
    """The first holds the lock before any state table exists; the second must neither create them nor fail."""
    kit, pub = applier_parts
    first_gate, second_gate = tmp_path / "first-go", tmp_path / "second-go"
    first = Applier(kit, pub, tmp_path / "a1").start(db_url, env={"KIT_FAULT_WAIT": f"lock-acquired:{first_gate}"})
    try:
        wait_for(Path(f"{first_gate}.waiting"), first)
        second = Applier(kit, pub, tmp_path / "a2").start(
            db_url, "--lock-timeout", "120", env={"KIT_FAULT_WAIT": f"lock-busy:{second_gate}"}
        )
        try:
            wait_for(Path(f"{second_gate}.waiting"), second)  # the second found the lock busy and waits
            # Neither has created the state tables yet: they are created only by the lock holder.
            probe = connect(db_url, create=False)
            try:
                assert not probe.table_exists("kit_migrations") and not probe.table_exists("kit_runs")
            finally:
                probe.close()
            second_gate.touch()
            first_gate.touch()
        finally:
            second_code, second_err = _finish(second)
    finally:
        first_gate.touch()
        first_code, first_err = _finish(first)
    assert first_code == 0, first_err
    assert second_code == 0, second_err  # it ran after the first: every step already applied
    reference = tmp_path / "reference.db"
    assert Applier(kit, pub, tmp_path / "ref").run(f"sqlite:///{reference}").returncode == 0
    assert snapshot_of(db_url) == snapshot_of(f"sqlite:///{reference}")


def test_second_apply_gives_up_with_exit_9_naming_the_holder(
    applier_parts: tuple[Path, Path], db_url: str, tmp_path: Path
) -> None:
    kit, pub = applier_parts
    gate = tmp_path / "go"
    first = Applier(kit, pub, tmp_path / "a1").start(db_url, env={"KIT_FAULT_WAIT": f"backfill-committed:2:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), first)
        second = Applier(kit, pub, tmp_path / "a2").run(db_url, "--lock-timeout", "0.2")
    finally:
        gate.touch()
        first_code, first_err = _finish(first)
    assert second.returncode == 9, second.stderr
    assert second.stderr.count("\n") == 1 and "another kit apply holds the lock" in second.stderr
    if db_url.startswith("sqlite"):
        assert "pid" in second.stderr  # the lease names its holder
    assert first_code == 0, first_err


def test_sqlite_write_transaction_held_elsewhere_is_lock_busy_within_lock_timeout(
    applier_parts: tuple[Path, Path], tmp_path: Path
) -> None:
    """Another connection holding a write transaction: exit 9 after --lock-timeout, not exit 8 after 30 s."""
    import sqlite3

    kit, pub = applier_parts
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    try:
        result = Applier(kit, pub, tmp_path / "a").run(f"sqlite:///{path}", "--lock-timeout", "1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 9, result.stderr
    assert "another connection holds a write transaction" in result.stderr
    assert result.stderr.count("\n") == 1
    assert Applier(kit, pub, tmp_path / "a").run(f"sqlite:///{path}").returncode == 0


def test_postgresql_batch_behind_another_sessions_lock_stops_after_lock_timeout(
    applier_parts: tuple[Path, Path], pg_dsn: str, tmp_path: Path
) -> None:
    """A batch waiting on a lock another session holds gives up after --lock-timeout (it waited for ever)."""
    import psycopg

    kit, pub = applier_parts
    gate = tmp_path / "go"
    run = Applier(kit, pub, tmp_path / "a").start(
        pg_dsn, "--lock-timeout", "1", env={"KIT_FAULT_WAIT": f"backfill-batch:{gate}"}
    )
    holder = psycopg.connect(pg_dsn)
    try:
        wait_for(Path(f"{gate}.waiting"), run)  # migrations done: the table exists, no batch has run
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        gate.touch()
        code, stderr = _finish(run)
    finally:
        gate.touch()
        holder.rollback()
        holder.close()
        if run.returncode is None:
            run.kill()
    assert code == 8, stderr
    assert stderr.count("\n") == 1 and "lock timeout" in stderr and "--lock-timeout" in stderr, stderr
    # Nothing was quarantined for it, and the rerun converges on what one uninterrupted run leaves.
    assert Applier(kit, pub, tmp_path / "a").run(pg_dsn).returncode == 0
    reference = tmp_path / "reference.db"
    assert Applier(kit, pub, tmp_path / "ref").run(f"sqlite:///{reference}").returncode == 0
    assert snapshot_of(pg_dsn) == snapshot_of(f"sqlite:///{reference}")
