"""rollback, status and repair results: every shape their to_json takes fits its published schema.

The CLI prints ``to_json`` as is (``--json``), so these are the documents users get; the integration
tests (tests/integration/test_json_outputs.py) check the same schemas on real runs.
"""

from __future__ import annotations

import pytest

from kitbuilder.apply.db_results import (
    BackfillProgress,
    LockHolder,
    RepairResult,
    RollbackResult,
    StatusReport,
    StepRef,
)
from kitbuilder.apply.results import DatabaseInfo
from kitbuilder.apply.state import LeaseHolder, MigrationRecord, RunRecord
from kitbuilder.cli.render_apply import repair_text, rollback_text, status_text
from kitbuilder.core import schemas

RUN = "a" * 32
STEPS = (StepRef("21-101-b", "backfill", "21-101"), StepRef("21-101", "migration", "21-101"))
AT = "2026-01-02T03:04:05.000006Z"


def _valid(name: str, document: object) -> None:
    error = schemas.first_error(name, document)
    assert error is None, f"{schemas.json_path(error)}: {error.message}"


@pytest.mark.parametrize(
    ("result", "keys"),
    [
        (RollbackResult(RUN, "none", True, STEPS), {"ok", "runId", "dryRun", "wouldRevert"}),
        (RollbackResult(RUN, "none", False, STEPS), {"ok", "runId", "toPhase", "reverted"}),
        (RollbackResult(RUN, "21-101", False), {"ok", "runId", "toPhase", "reverted"}),
        (
            RollbackResult(RUN, "none", True, nothing_applied=True),
            {"ok", "runId", "dryRun", "toPhase", "wouldRevert", "note"},
        ),
        (
            RollbackResult(RUN, "none", False, nothing_applied=True),
            {"ok", "runId", "dryRun", "toPhase", "reverted", "note"},
        ),
    ],
    ids=["dry-run", "reverted", "reverted-none", "dry-nothing-applied", "nothing-applied"],
)
def test_rollback_result_fits_schema(result: RollbackResult, keys: set[str]) -> None:
    document = result.to_json()
    _valid("rollback-report", document)
    assert set(document) == keys


def test_reverted_steps_carry_their_status_and_dry_run_ones_do_not() -> None:
    assert RollbackResult(RUN, "none", False, STEPS).to_json()["reverted"] == [
        {"id": "21-101-b", "kind": "backfill", "phase": "21-101", "status": "reverted"},
        {"id": "21-101", "kind": "migration", "phase": "21-101", "status": "reverted"},
    ]
    assert RollbackResult(RUN, "none", True, STEPS).to_json()["wouldRevert"] == [s.to_json() for s in STEPS]


def _status() -> StatusReport:
    migration = MigrationRecord(
        "21-101", "21-101", "migration", "0" * 64, "kit-sha256-v1", "succeeded", 1, RUN, AT, AT, 12, 1, None
    )
    job = BackfillProgress("21-101-b", "paused", "error rate", "k-17", 40, 2, 3, AT, 60, 20.0, 3.0)
    run = RunRecord(RUN, AT, None, "kit", 1, "running", None)
    lock = LockHolder.of(LeaseHolder(RUN, "host", 42, "2026-01-02T03:04:05+00:00"))
    return StatusReport(DatabaseInfo("sqlite", "3.45", "site.db"), (migration,), (job,), (run,), lock)


def test_status_report_fits_schema_empty_and_filled() -> None:
    empty = StatusReport(DatabaseInfo("postgresql", "16.2", "postgresql://kit:***@db/site")).to_json()
    _valid("status-report", empty)
    assert (empty["migrations"], empty["backfills"], empty["runs"], empty["lock"]) == ([], [], [], None)
    document = _status().to_json()
    _valid("status-report", document)
    assert document["lock"] == {"runId": RUN, "host": "host", "pid": 42, "expiresAt": "2026-01-02T03:04:05Z"}


def test_repair_result_fits_schema() -> None:
    _valid("repair-report", RepairResult(RUN, "kit_lock", "released: operator").to_json())


def test_text_renderers_read_the_typed_results(capsys: pytest.CaptureFixture[str]) -> None:
    rollback_text(RollbackResult(RUN, "none", True, STEPS[:1]))
    status_text(_status())
    repair_text(RepairResult(RUN, "21-101", "accepted checksum x: why"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["would revert 1 step(s)", f"  backfill  {'21-101-b':<28} "]
    assert lines[2] == f"  migration {'21-101':<28} {'succeeded':<10} phase 21-101  {AT}"
    assert lines[3].startswith(f'  backfill  {"21-101-b":<28} {"paused":<10} 40 rows, 2 quarantined, cursor "k-17"')
    assert lines[3].endswith("60 remaining, ETA 3s  (error rate)")
    assert lines[4] == f"  lock held by run {RUN} (pid 42 on host, lease until 2026-01-02T03:04:05Z)"
    assert lines[5:] == ["21-101: accepted checksum x: why"]
