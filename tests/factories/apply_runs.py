"""A small kit with every kind of apply step, and `kit apply` run as a child process (as users run it).

Fault, signal and concurrency tests drive the child with the deterministic
hooks of ``kitbuilder.faults`` (KIT_FAULT, KIT_FAULT_SIGNAL, KIT_FAULT_WAIT),
never with sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kitbuilder.apply.db import Database, connect

ROWS = 600
BATCH = 50  # 12 batches
SEED_ROWS = 300

SPEC = """\
apiVersion: kitbuilder/v1
name: fault-test
version: "1"
sequence: 1
expires: "2099-01-01"
product: test
migrations:
  - id: m1-schema
    phase: "1"
    source: src/m1
  - id: m2-rows
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
    done TEXT, digest TEXT, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE lookup (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""
M2 = f"""\
INSERT INTO items (id, tenant, payload)
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
  SELECT i, 't' || (i % 4), 'payload-' || i FROM n;
UPDATE items SET payload = payload || '-x' WHERE id % 7 = 0;
"""
# kit_sha256 runs Python inside SQLite: a signal arriving during it must still be an interrupt, not a row error.
JOB = f"""\
table: items
key: id
tenant_column: tenant
predicate: done IS NULL
set:
  done: "'v2:' || payload"
  digest: "kit_sha256(payload)"
  attempts: "attempts + 1"
batch_size: {BATCH}
"""


def write_fault_kit_source(root: Path) -> Path:
    for name in ("src/m1", "src/m2", "src/seeds"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "src/m1/up.sql").write_text(M1)
    (root / "src/m1/verify.sql").write_text("SELECT COUNT(*) = 0 FROM lookup;\n")
    (root / "src/m2/up.sql").write_text(M2)
    (root / "src/m2/verify.sql").write_text(f"SELECT COUNT(*) = {ROWS} FROM items;\n")
    (root / "src/touch.yaml").write_text(JOB)
    (root / "src/seeds/lookup.ndjson").write_text("".join(f'{{"k": "k{i}", "v": "v{i}"}}\n' for i in range(SEED_ROWS)))
    spec = root / "fault.yaml"
    spec.write_text(SPEC)
    return spec


# The kit, its public key, and what an uninterrupted run of it leaves (``snapshot_of`` a reference database).
FaultKit = tuple[Path, Path, tuple[object, ...]]


def build_fault_kit(root: Path, key: Path) -> Path:
    """The fault kit built and signed with ``key`` under ``root``."""
    from tests.factories.cli import run_kit  # the in-process CLI; conftest does not import this module

    kit = root / "fault.kit.tar.zst"
    built = run_kit("build", write_fault_kit_source(root / "src"), "--key", key, "--out", kit)
    assert built.exit_code == 0, built.output
    return kit


def fault_kit_with_reference(root: Path, key: Path, pub: Path) -> FaultKit:
    """The fault kit, its public key, and the snapshot an uninterrupted SQLite run leaves."""
    kit = build_fault_kit(root, key)
    reference = f"sqlite:///{root / 'reference.db'}"
    done = Applier(kit, pub, root / "ref-artifacts").run(reference)
    assert done.returncode == 0, done.stderr
    return kit, pub, snapshot_of(reference)


def snapshot(database: Database) -> tuple[object, ...]:
    """What an uninterrupted run leaves: every row once (attempts = 1), the seed, every step recorded."""
    return (
        database.query("SELECT id, done, digest, attempts FROM items ORDER BY id"),
        database.query("SELECT k, v FROM lookup ORDER BY k"),
        database.query("SELECT id, status, checksum FROM kit_migrations ORDER BY id"),
        database.query("SELECT job, status, rows_processed, rows_failed, cursor_value FROM kit_backfill_runs"),
    )


def snapshot_of(url: str) -> tuple[object, ...]:
    database = connect(url, create=False)
    try:
        return snapshot(database)
    finally:
        database.close()


@dataclass(frozen=True)
class Applier:
    kit: Path
    pub: Path
    artifacts: Path

    def command(self, db_url: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kitbuilder.cli",
            "apply",
            str(self.kit),
            "--key",
            str(self.pub),
            "--db",
            db_url,
            "--artifacts",
            str(self.artifacts),
            "--quiet",
            *extra,
        ]

    def run(self, db_url: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(db_url, *extra), capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
        )

    def start(self, db_url: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(db_url, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Until a child held by KIT_FAULT_WAIT reports it is at its point (it created ``path``)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"child exited {process.returncode} before reaching its point: {stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"child never reached its point ({path})")
        time.sleep(0.01)
