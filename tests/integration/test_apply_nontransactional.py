"""Non-transactional migrations (CREATE INDEX CONCURRENTLY) on PostgreSQL: run outside a transaction,
and a crash that leaves them 'running' is resolved by their verify script on the next run."""

from __future__ import annotations

import json
from pathlib import Path

from kitbuilder.apply.db import connect
from tests.factories.cli import KitEnv, run_kit

SPEC = """\
apiVersion: kitbuilder/v1
name: concurrent-index
version: "1"
sequence: 1
expires: "2099-01-01"
product: test
migrations:
  - id: base
    phase: "1"
    source: src/base
  - id: concurrent-index
    phase: "2"
    source: src/concurrent
    transactional: false
    idempotent: true
"""


def _kit(kit_env: KitEnv) -> Path:
    root = kit_env.root / "ci"
    (root / "src/base").mkdir(parents=True)
    (root / "src/concurrent").mkdir(parents=True)
    (root / "src/base/up.sql").write_text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v TEXT);\n")
    (root / "src/concurrent/up.sql").write_text("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_items_v ON items (v);\n")
    (root / "src/concurrent/verify.sql").write_text(
        "SELECT COUNT(*) = 1 FROM pg_indexes WHERE indexname = 'ix_items_v';\n"
    )
    (root / "spec.yaml").write_text(SPEC)
    out = kit_env.root / "ci.kit.tar.zst"
    assert run_kit("build", root / "spec.yaml", "--key", kit_env.ed_key, "--out", out).exit_code == 0
    return out


def _apply(kit_env: KitEnv, kit: Path, dsn: str) -> dict[str, object]:
    result = run_kit("apply", kit, "--key", kit_env.ed_pub, "--db", dsn, "--artifacts", kit_env.root / "a", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0, document.get("error")
    return dict(document)


def test_concurrent_index_runs_outside_a_transaction(kit_env: KitEnv, pg_dsn: str) -> None:
    kit = _kit(kit_env)
    report = _apply(kit_env, kit, pg_dsn)
    step = next(s for s in report["steps"] if s["id"] == "concurrent-index")  # type: ignore[union-attr]
    assert step["status"] == "succeeded"
    database = connect(pg_dsn)
    assert database.query_value("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'ix_items_v'") == 1
    database.close()


def test_interrupted_concurrent_migration_is_resolved_by_verify(kit_env: KitEnv, pg_dsn: str) -> None:
    kit = _kit(kit_env)
    _apply(kit_env, kit, pg_dsn)
    database = connect(pg_dsn)
    # What a SIGKILL between "running" and "succeeded" leaves behind.
    database.execute("UPDATE kit_migrations SET status = 'running' WHERE id = 'concurrent-index'")
    report = _apply(kit_env, kit, pg_dsn)
    step = next(s for s in report["steps"] if s["id"] == "concurrent-index")  # type: ignore[union-attr]
    assert step["resolvedBy"] == "verify"
    assert database.query_value("SELECT status FROM kit_migrations WHERE id = 'concurrent-index'") == "succeeded"
    assert database.query_value("SELECT COUNT(*) FROM kit_events WHERE event = 'repair'") == 1
    # The human-readable report of such a run renders too (it once died on the resolved step's missing fields).
    database.execute("UPDATE kit_migrations SET status = 'running' WHERE id = 'concurrent-index'")
    text = run_kit("apply", kit, "--key", kit_env.ed_pub, "--db", pg_dsn, "--artifacts", kit_env.root / "a", "-q")
    assert text.exit_code == 0 and "concurrent-index" in text.stdout and "Traceback" not in text.output
    database.close()
