"""SIGINT, SIGTERM and SIGKILL at named points of `kit apply`, then a rerun equal to an uninterrupted run.

The child sends itself the signal (KIT_FAULT_SIGNAL) or dies as SIGKILL would
(KIT_FAULT, exit 137) at the N-th hit of a point: deterministic, no sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import Applier, FaultKit, fault_kit_with_reference, snapshot_of
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair


@pytest.fixture(scope="module")
def fault_kit(tmp_path_factory: pytest.TempPathFactory) -> FaultKit:
    """The kit, its public key, and what an uninterrupted run leaves (the reference)."""
    root = tmp_path_factory.mktemp("fault-kit")
    return fault_kit_with_reference(root, *write_pair(ed25519_key("release"), root / "release"))


# (point, hit): inside a migration, mid-batch (before its commit), after a commit, the seed, between steps.
CASES = [
    ("INT", ("migration-statement", 2)),
    ("INT", ("backfill-batch", 3)),
    ("INT", ("seed-commit", 1)),
    ("INT", ("step-start", 4)),
    ("TERM", ("backfill-committed", 7)),
    ("KILL", ("migration-statement", 2)),
    ("KILL", ("backfill-batch", 3)),
    ("KILL", ("backfill-committed", 7)),
]


def _rerun(applier: Applier, db_url: str) -> None:
    """The operator's rerun (in-process: the same CLI, without a second interpreter start-up)."""
    result = run_kit(
        "apply", applier.kit, "--key", applier.pub, "--db", db_url, "--artifacts", applier.artifacts, "--quiet"
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("signal_name", "point"), CASES, ids=lambda v: v if isinstance(v, str) else f"{v[0]}:{v[1]}")
def test_signal_at_point_then_rerun_equals_uninterrupted_run(
    fault_kit: tuple[Path, Path, tuple[object, ...]],
    db_url: str,
    tmp_path: Path,
    signal_name: str,
    point: tuple[str, int],
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    name, hit = point
    if signal_name == "KILL":
        env = {"KIT_FAULT": f"{name}:{hit}"}
    else:
        env = {"KIT_FAULT_SIGNAL": f"{signal_name}@{name}:{hit}"}
    stopped = applier.run(db_url, "--json", env=env)
    expected = {"INT": 130, "TERM": 143, "KILL": 137}[signal_name]
    assert stopped.returncode == expected, stopped.stderr
    database = connect(db_url, create=False)
    try:
        if signal_name != "KILL":
            # A clean stop: one line, recorded interrupted, lock released, evidence written, no row quarantined.
            assert stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr
            assert f"stopped by SIG{signal_name} at a safe point" in stopped.stderr
            report = json.loads(stopped.stdout)
            assert report["status"] == "interrupted" and report["error"]["exitCode"] == expected
            evidence = Path(report["evidence"]["directory"]) / "report.json"
            assert json.loads(evidence.read_text())["status"] == "interrupted"
            assert database.query_value("SELECT status FROM kit_runs WHERE run_id = :r", {"r": report["runId"]}) == (
                "interrupted"
            )
            if database.dialect == "sqlite":
                assert database.query("SELECT * FROM kit_lock") == []
        if database.table_exists("kit_backfill_quarantine"):
            assert database.query_value("SELECT COUNT(*) FROM kit_backfill_quarantine") == 0
    finally:
        database.close()
    if signal_name != "KILL":
        status = run_kit("status", "--db", db_url)
        assert status.exit_code == 0, status.output
    _rerun(applier, db_url)
    assert snapshot_of(db_url) == reference


def test_signal_inside_a_batch_rolls_that_batch_back_whole(
    fault_kit: tuple[Path, Path, tuple[object, ...]], db_url: str, tmp_path: Path
) -> None:
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "artifacts")
    # The first signal is sent inside batch 3's transaction; the batch's own state write is the next statement,
    # where the interrupt is raised: the batch is rolled back.
    stopped = applier.run(db_url, env={"KIT_FAULT_SIGNAL": "INT@backfill-batch:3"})
    assert stopped.returncode == 130, stopped.stderr
    database = connect(db_url, create=False)
    try:
        processed = database.query_value("SELECT rows_processed FROM kit_backfill_runs WHERE job = 'touch'")
        assert processed == 100  # two committed batches; the third rolled back whole
        assert database.query_value("SELECT COUNT(*) FROM items WHERE done IS NOT NULL") == 100
    finally:
        database.close()
    _rerun(applier, db_url)
    assert snapshot_of(db_url) == reference
