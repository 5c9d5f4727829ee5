"""A second adversarial review of kit apply/status/rollback/repair: the plan and the runtime together.

Each test is named after a defect it found and asserts the correct behaviour (exit code, one line
on stderr, the database equal to an uninterrupted run). Children are held or stopped at exact
points with the ``kitbuilder.faults`` hooks, never with sleeps.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect
from kitbuilder.core import schemas
from tests.factories.apply_runs import Applier, FaultKit, fault_kit_with_reference, snapshot_of
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review2-keys")
    return write_pair(ed25519_key("release"), root / "release")


@pytest.fixture(scope="module")
def fault_kit(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> FaultKit:
    """The fault kit of tests/factories/apply_runs.py, its public key, and an uninterrupted run's snapshot."""
    return fault_kit_with_reference(tmp_path_factory.mktemp("review2-kit"), *keys)


def _one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A full 64 KiB tmpfs (root only); directories can still be made on it, files cannot grow."""
    mount = tmp_path / "full"
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


# Evidence -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_evidence_on_a_full_disk_leaves_no_empty_timestamped_directory(
    fault_kit: FaultKit, db_url: str, full_disk: Path, dry_run: bool
) -> None:
    """Before: the timestamped directory was made first, then report.json failed: an empty evidence dir stayed."""
    kit, pub, reference = fault_kit
    artifacts = full_disk / "evidence"
    result = Applier(kit, pub, artifacts).run(db_url, *(["--dry-run"] if dry_run else []))
    assert result.returncode == 12, result.stderr
    _one_line(result.stderr)
    assert sorted(p.name for p in artifacts.iterdir()) == []
    if not dry_run:
        assert snapshot_of(db_url) == reference


# --tenant -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", ["CREATE", "ALTER"])
def test_tenant_value_a_column_created_by_the_same_kit_cannot_hold_is_refused_before_the_first_statement(
    tmp_path: Path, db_url: str, declared: str
) -> None:
    """Before: only an existing table was probed. On a fresh PostgreSQL database the kit's own migration
    created the integer tenant column, ran, and the backfill then failed on ``--tenant abc`` (exit 8/2 with
    m1 applied). Now the value is cast to the declared type first. (SQLite compares loosely: exit 0.)"""
    from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
    from tests.factories.hostile import RELEASE

    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    up = (
        GOOD_UP.replace("tenant TEXT", "tenant INTEGER")
        if declared == "CREATE"
        else GOOD_UP.replace(", tenant TEXT", "") + "ALTER TABLE items ADD COLUMN tenant INTEGER;\n"
    )
    assert "tenant INTEGER" in up
    m1, files = good_migration("m1", "1")
    files["migrations/m1/up.sql"] = ("m1", up.encode())
    job = b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"
    kit = craft_apply_kit(
        tmp_path / "k.kit.tar.zst",
        [m1, {"id": "b1", "role": "backfill", "phase": "1"}],
        {**files, "backfills/b1.yaml": ("b1", job)},
    )
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--tenant", "abc")
    if db_url.startswith("sqlite"):
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    _one_line(result.stderr)
    assert "--tenant 'abc'" in result.stderr and "nothing was applied" in result.stderr
    database = connect(db_url, read_only=True)
    try:
        assert not database.table_exists("items") and not database.table_exists("kit_runs")
    finally:
        database.close()
    ok = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--tenant", "7")
    assert ok.exit_code == 0, ok.output


# Locks ----------------------------------------------------------------------------------------------------------


def test_release_lock_of_a_live_run_on_this_host_is_refused(fault_kit: FaultKit, tmp_path: Path) -> None:
    """Before: `kit repair --release-lock` removed the lease of a running apply on this host (exit 0), and a
    second apply then ran beside it until the first renewed its lease. Now: exit 9 naming the pid, lease kept."""
    import sqlite3

    from tests.factories.apply_runs import wait_for

    kit, pub, reference = fault_kit
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    gate = tmp_path / "go"
    first = Applier(kit, pub, tmp_path / "a1").start(db_url, env={"KIT_FAULT_WAIT": f"backfill-committed:3:{gate}"})
    try:
        wait_for(Path(f"{gate}.waiting"), first)
        repaired = run_kit("repair", "--db", db_url, "--release-lock", "--reason", "looked stuck")
        assert repaired.exit_code == 9, repaired.output
        _one_line(repaired.stderr)
        assert f"pid {first.pid}" in repaired.stderr
        with sqlite3.connect(tmp_path / "site.db") as probe:
            assert probe.execute("SELECT pid FROM kit_lock").fetchall() == [(first.pid,)]
            assert probe.execute("SELECT COUNT(*) FROM kit_events WHERE event = 'repair'").fetchone() == (0,)
    finally:
        gate.touch()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert snapshot_of(db_url) == reference


def _status_json(db_url: str) -> dict[str, Any]:
    """`kit status --json`, valid against its schema; the text form works too."""
    assert run_kit("status", "--db", db_url).exit_code == 0
    result = run_kit("status", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    error = schemas.first_error("status-report", document)
    assert error is None, f"{schemas.json_path(error)}: {error.message}"
    return document


@pytest.mark.parametrize("how", ["INT", "TERM", "KILL"])
def test_tenant_run_stopped_then_finished_by_a_full_run_leaves_no_open_tenant_state(
    fault_kit: FaultKit, db_url: str, tmp_path: Path, how: str
) -> None:
    """Before: `touch[tenant=t1]` stayed `active` (with rows "remaining") in kit status forever after a full
    apply had processed every row: the per-tenant prefix of the state SQL was `touch[tenant=]`, which matches
    no tenant, so neither a finished full job, nor rollback, nor --reset-cursor, nor --accept-checksum
    reached the per-tenant states."""
    kit, pub, reference = fault_kit
    applier = Applier(kit, pub, tmp_path / "a")
    stop = {"KIT_FAULT": "backfill-committed:2"} if how == "KILL" else {"KIT_FAULT_SIGNAL": f"{how}@backfill-batch:2"}
    stopped = applier.run(db_url, "--tenant", "t1", env=stop)
    assert stopped.returncode == {"INT": 130, "TERM": 143, "KILL": 137}[how], stopped.stderr
    if how != "KILL":
        _one_line(stopped.stderr)
    assert [job["status"] for job in _status_json(db_url)["backfills"]] == ["active"]
    finished = applier.run(db_url)
    assert finished.returncode == 0, finished.stderr
    assert snapshot_of(db_url)[:3] == reference[:3]
    jobs = {job["job"]: job for job in _status_json(db_url)["backfills"]}
    assert set(jobs) == {"touch", "touch[tenant=t1]"}
    assert {job["status"] for job in jobs.values()} == {"finished"}
    assert jobs["touch[tenant=t1]"]["remaining"] == 0


def test_reset_cursor_of_a_job_resets_its_per_tenant_cursors(fault_kit: FaultKit, db_url: str, tmp_path: Path) -> None:
    """Before: `kit repair --reset-cursor touch` said it reset the job but left `touch[tenant=t1]`'s cursor."""
    kit, pub, _ = fault_kit
    applier = Applier(kit, pub, tmp_path / "a")
    assert applier.run(db_url, "--tenant", "t1", env={"KIT_FAULT": "backfill-committed:2"}).returncode == 137
    repaired = run_kit("repair", "--db", db_url, "--reset-cursor", "touch", "--reason", "restart the job")
    assert repaired.exit_code == 0, repaired.output
    assert [job["cursor"] for job in _status_json(db_url)["backfills"]] == [None]


def test_job_post_checks_of_a_tenant_run_are_deferred_to_the_full_apply(tmp_path: Path, db_url: str) -> None:
    """Before: a job's post_checks (table-wide, as docs/apply.md's example) ran after a `--tenant` run, failed
    on the other tenants' rows and paused the job (exit 10): every tenant run of such a kit failed. Now they
    are reported deferred, the tenant's job is finished, and the full apply evaluates them."""
    from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
    from tests.factories.hostile import RELEASE

    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    m1, files = good_migration("m1", "1")
    rows = "INSERT INTO items (id, name, tenant) VALUES (1, 'a', 't1'), (2, 'b', 't2'), (3, 'c', 't1');\n"
    files["migrations/m1/up.sql"] = ("m1", (GOOD_UP + rows).encode())
    job = (
        b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"
        b"post_checks:\n  - {id: none-missing, kind: count, table: items, where: done IS NULL, expect: {equals: 0}}\n"
    )
    kit = craft_apply_kit(
        tmp_path / "k.kit.tar.zst",
        [m1, {"id": "b1", "role": "backfill", "phase": "1"}],
        {**files, "backfills/b1.yaml": ("b1", job)},
    )
    common = ("--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--json")
    tenant = run_kit("apply", kit, *common, "--tenant", "t1")
    assert tenant.exit_code == 0, tenant.output
    report = json.loads(tenant.stdout)
    assert "none-missing" in report["deferred"]["checks"]
    assert [job["status"] for job in _status_json(db_url)["backfills"]] == ["finished"]
    full = run_kit("apply", kit, *common)
    assert full.exit_code == 0, full.output
    step = next(s for s in json.loads(full.stdout)["steps"] if s["id"] == "b1")
    assert [(c["id"], c["passed"]) for c in step["postChecks"]] == [("none-missing", True)]


def test_rollback_after_a_tenant_run_reverts_the_per_tenant_state(tmp_path: Path, db_url: str) -> None:
    """Before: `kit rollback` ran the job's revert but left `b1[tenant=t1]` recorded `finished` (kit status lied,
    and its quarantine stayed)."""
    from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
    from tests.factories.hostile import RELEASE

    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    m1, files = good_migration("m1", "1")
    rows = "INSERT INTO items (id, name, tenant) VALUES (1, 'a', 't1'), (2, 'b', 't2');\n"
    files["migrations/m1/up.sql"] = ("m1", (GOOD_UP + rows).encode())
    job = (
        b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"
        b'revert: "UPDATE items SET done = NULL"\n'
    )
    kit = craft_apply_kit(
        tmp_path / "k.kit.tar.zst",
        [m1, {"id": "b1", "role": "backfill", "phase": "2"}],
        {**files, "backfills/b1.yaml": ("b1", job)},
    )
    common = ("--key", pub, "--db", db_url)
    assert run_kit("apply", kit, *common, "--artifacts", tmp_path / "a", "--tenant", "t1").exit_code == 0
    rolled = run_kit("rollback", kit, *common, "--to-phase", "1")
    assert rolled.exit_code == 0, rolled.output
    assert [(job["job"], job["status"]) for job in _status_json(db_url)["backfills"]] == [("b1[tenant=t1]", "reverted")]
    again = run_kit("rollback", kit, *common, "--to-phase", "1", "--dry-run", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["wouldRevert"] == [], again.output


def test_tenant_column_the_kit_adds_to_an_existing_table_is_not_refused(tmp_path: Path, db_url: str) -> None:
    """Before: the --tenant probe of an existing table named a column the kit's own migration adds, failed
    ("no such column") and refused a valid run with exit 2. Now the kit's declaration decides."""
    from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
    from tests.factories.hostile import RELEASE

    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    m1, files = good_migration("m1", "1")
    rows = "INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b');\n"
    files["migrations/m1/up.sql"] = ("m1", (GOOD_UP.replace(", tenant TEXT", "") + rows).encode())
    common = ("--key", pub, "--db", db_url, "--artifacts", tmp_path / "a")
    assert run_kit("apply", craft_apply_kit(tmp_path / "1.kit.tar.zst", [m1], files), *common).exit_code == 0
    m2, m2_files = good_migration("m2", "2")
    m2_files["migrations/m2/up.sql"] = (
        "m2",
        b"ALTER TABLE items ADD COLUMN tenant TEXT;\nUPDATE items SET tenant = 't1';\n",
    )
    job = b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"
    second = craft_apply_kit(
        tmp_path / "2.kit.tar.zst",
        [m1, m2, {"id": "b1", "role": "backfill", "phase": "2"}],
        {**files, **m2_files, "backfills/b1.yaml": ("b1", job)},
        sequence=2,
    )
    result = run_kit("apply", second, *common, "--tenant", "t1")
    assert result.exit_code == 0, result.output
    database = connect(db_url, read_only=True)
    try:
        assert database.query("SELECT id, done FROM items ORDER BY id") == [(1, "y"), (2, "y")]
    finally:
        database.close()
