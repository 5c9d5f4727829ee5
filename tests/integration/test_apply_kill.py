"""The PostgreSQL server drops `kit apply`'s connection mid-backfill: exit 8 naming the cursor, rerun resumes.

(Kills and signals at many points are in test_apply_signals.py, concurrent runs in test_apply_concurrency.py.)
"""

from __future__ import annotations

from pathlib import Path

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import ROWS, Applier, snapshot_of, wait_for, write_fault_kit_source
from tests.factories.cli import KitEnv, run_kit


def test_database_going_away_mid_run_is_a_clear_error_and_rerun_resumes(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    spec = write_fault_kit_source(tmp_path / "kit")
    kit = tmp_path / "fault.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    applier = Applier(kit, kit_env.ed_pub, tmp_path / "artifacts")
    gate = tmp_path / "go"
    admin = connect(pg_dsn)
    try:
        process = applier.start(pg_dsn, env={"KIT_FAULT_WAIT": f"backfill-committed:3:{gate}"})
        try:
            wait_for(Path(f"{gate}.waiting"), process)
            # The server drops the apply's connection, as a restart or failover would.
            admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            gate.touch()
            _, stderr = process.communicate(timeout=60)
        assert process.returncode == 8, stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
        assert "backfill touch stopped at id=150" in stderr and "rerun kit apply to resume" in stderr
        assert admin.query_value("SELECT rows_processed FROM kit_backfill_runs WHERE job = 'touch'") == 150
    finally:
        admin.close()
    rerun = applier.run(pg_dsn)
    assert rerun.returncode == 0, rerun.stderr
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    assert applier.run(reference).returncode == 0
    assert snapshot_of(pg_dsn) == snapshot_of(reference)
    assert len(snapshot_of(pg_dsn)[0]) == ROWS  # type: ignore[arg-type]
