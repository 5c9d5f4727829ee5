"""The apply plan is checked whole before the first statement, on SQLite and PostgreSQL.

- Kits that ``kit verify`` used to accept and ``kit apply`` then crashed on (after some steps had
  run) are refused by verify (exit 5), and by apply before anything is written.
- ``--tenant`` is validated for every job up front; a tenant-limited run records its backfill
  progress for that tenant only, so a later full apply still processes every other tenant.
- Unparsable migration SQL and an unwritable --artifacts directory stop the run before it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect
from tests.factories.cli import KitEnv, apply_json, run_kit
from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    return write_pair(RELEASE, tmp_path / "keys" / "release")[1]


def one_line_error(stderr: str, code_kind: str, *words: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"kit: {code_kind} error: "), stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"


def kit_tables(db_url: str) -> bool:
    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///") :]).exists():
        return False
    database = connect(db_url, read_only=True)
    try:
        return database.table_exists("kit_migrations") or database.table_exists("items")
    finally:
        database.close()


def three_migrations() -> tuple[list[dict[str, Any]], dict[str, tuple[str, bytes]]]:
    components: list[dict[str, Any]] = []
    files: dict[str, tuple[str, bytes]] = {}
    for number in (1, 2, 3):
        component, payload = good_migration(f"m{number}", str(number))
        components.append(component)
        files.update(payload)
    return components, files


SEED_FILE = {"seeds/s1/rows.ndjson": ("s1", b'{"id": 1, "name": "a"}\n')}
JOB_OK = b"table: items\nkey: id\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"


def case_list_option() -> tuple[list[dict[str, Any]], dict[str, tuple[str, bytes]], list[dict[str, Any]], int]:
    components, files = three_migrations()
    components[1]["options"] = {"up": ["up.sql"]}
    return components, files, [], 1


def case_count_check_without_table() -> Any:
    components, files = three_migrations()
    return components, files, [{"id": "rows", "kind": "count", "expect": "stable"}], 1


def case_integer_seed_key() -> Any:
    components, files = three_migrations()
    components.append({"id": "s1", "role": "seed", "phase": "4", "options": {"table": "items", "key": 1}})
    return components, {**files, **SEED_FILE}, [], 1


def case_sequence_past_int64() -> Any:
    components, files = three_migrations()
    return components, files, [], 2**63


def case_backfill_batch_size_zero() -> Any:
    components, files = three_migrations()
    components.append({"id": "b1", "role": "backfill", "phase": "4"})
    return components, {**files, "backfills/b1.yaml": ("b1", JOB_OK + b"batch_size: 0\n")}, [], 1


def case_backfill_check_without_table() -> Any:
    components, files = three_migrations()
    components.append({"id": "b1", "role": "backfill", "phase": "4"})
    job = JOB_OK + b"post_checks:\n  - {id: done, kind: count, expect: {equals: 0}}\n"
    return components, {**files, "backfills/b1.yaml": ("b1", job)}, [], 1


def case_check_phase_unknown() -> Any:
    components, files = three_migrations()
    return components, files, [{"id": "q", "kind": "sql", "query": "SELECT 1", "phase": "9"}], 1


def case_misspelled_option() -> Any:
    components, files = three_migrations()
    components[2]["options"] = {"transactionl": False}
    return components, files, [], 1


def case_named_file_missing() -> Any:
    components, files = three_migrations()
    components[2]["options"] = {"verify": "check.sql"}
    return components, files, [], 1


CASES = {
    "migration option that is a list": (case_list_option, ("m2", "up")),
    "count check without table": (case_count_check_without_table, ("rows", "table")),
    "integer seed key": (case_integer_seed_key, ("s1", "key")),
    "sequence >= 2^63": (case_sequence_past_int64, ("sequence",)),
    "backfill batch_size 0": (case_backfill_batch_size_zero, ("backfills/b1.yaml", "batch_size")),
    "backfill post_check without table": (case_backfill_check_without_table, ("post_checks", "table")),
    "check bound to no phase of the kit": (case_check_phase_unknown, ("q", "phase")),
    "misspelled migration option": (case_misspelled_option, ("m3", "transactionl")),
    "verify file named but missing": (case_named_file_missing, ("m3", "check.sql")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kit_apply_would_crash_on_is_refused_by_verify_and_before_any_statement(
    case: str, tmp_path: Path, pub: Path, db_url: str
) -> None:
    build, words = CASES[case]
    components, files, checks, sequence = build()
    kit = craft_apply_kit(tmp_path / "crafted.kit.tar.zst", components, files, checks=checks, sequence=sequence)
    verified = run_kit("verify", kit, "--key", pub)
    assert verified.exit_code == 5, verified.output
    one_line_error(verified.stderr, "format", *words)
    artifacts = tmp_path / "artifacts"
    applied = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", artifacts)
    assert applied.exit_code == 5, applied.output
    one_line_error(applied.stderr, "format", *words)
    assert not kit_tables(db_url), "a refused kit must not run any statement"
    assert not artifacts.exists()


def test_well_formed_crafted_kit_applies(tmp_path: Path, pub: Path, db_url: str) -> None:
    """The control for the cases above: the same shape with valid values verifies and applies."""
    components, files = three_migrations()
    components.append({"id": "s1", "role": "seed", "phase": "4", "options": {"table": "items", "key": ["id"]}})
    components.append({"id": "b1", "role": "backfill", "phase": "4"})
    files = {**files, **SEED_FILE, "backfills/b1.yaml": ("b1", JOB_OK)}
    checks = [{"id": "rows", "kind": "count", "table": "items", "expect": {"equals": 1}}]
    kit = craft_apply_kit(tmp_path / "ok.kit.tar.zst", components, files, checks=checks)
    assert run_kit("verify", kit, "--key", pub).exit_code == 0
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    assert [s["id"] for s in json.loads(result.stdout)["steps"]] == ["m1", "m2", "m3", "s1", "b1"]


def build_example(kit_env: KitEnv, name: str) -> Path:
    out = kit_env.root / f"{name}.kit.tar.zst"
    result = run_kit("build", ROOT / "manifests" / f"{name}.yaml", "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_tenant_run_of_the_lnm_release_kit_then_a_full_apply_converges(kit_env: KitEnv, db_url: str) -> None:
    kit = build_example(kit_env, "lnm-release")
    code, dry, _ = apply_json(kit_env, kit, db_url, "--dry-run", "--tenant", "tenant-1")
    assert code == 0, dry.get("error")
    assert dry["tenant"] == "tenant-1" and "21-103-cas-map" in dry["deferred"]["steps"]
    assert [p["id"] for p in dry["plan"]][-1] == "supersedes"  # the plan stops after the first backfill phase

    code, report, stderr = apply_json(kit_env, kit, db_url, "--tenant", "tenant-1")
    assert code == 0, (report.get("error"), stderr)
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["raw-linkset"]["tenant"] == "tenant-1" and steps["raw-linkset"]["rowsThisRun"] > 0
    assert set(report["deferred"]["steps"]) == {"21-103-cas-map", "object-store"}
    assert "raw-linkset-complete" in report["deferred"]["checks"]
    database = connect(db_url)
    try:
        done = dict(
            database.query(
                "SELECT tenant, COUNT(*) FROM advisory_observations WHERE raw_linkset IS NOT NULL GROUP BY tenant"
            )
        )
        assert set(done) == {"tenant-1"}
        assert not database.table_exists("cas_uri_map")
        assert (
            database.query_value(
                "SELECT COUNT(*) FROM advisory_supersedes s JOIN advisory_observations o ON o.id = s.observation_id "
                "WHERE o.tenant <> 'tenant-1'"
            )
            == 0
        )

        code, full, _ = apply_json(kit_env, kit, db_url)
        assert code == 0, full.get("error")
        assert all(c["passed"] for c in full["checks"]["after"]), full["checks"]["after"]
        assert database.query_value("SELECT COUNT(*) FROM advisory_observations WHERE raw_linkset IS NULL") == 0
        assert database.query_value("SELECT COUNT(*) FROM advisory_supersedes") == 1000
        jobs = {row[0] for row in database.query("SELECT job FROM kit_backfill_runs")}
        assert {"raw-linkset", "raw-linkset[tenant=tenant-1]", "supersedes"} <= jobs
    finally:
        database.close()


def test_tenant_that_a_job_cannot_honour_is_refused_before_anything_runs(kit_env: KitEnv, db_url: str) -> None:
    kit = build_example(kit_env, "canonical-key-v2")
    for extra in ((), ("--dry-run",)):
        result = run_kit(
            "apply",
            kit,
            "--key",
            kit_env.ed_pub,
            "--db",
            db_url,
            "--artifacts",
            kit_env.root / "a",
            "--tenant",
            "t1",
            *extra,
        )
        if result.exit_code == 0:
            pytest.skip("canonical-key-v2's backfills can all be limited to a tenant")
        assert result.exit_code == 2, result.output
        one_line_error(result.stderr, "usage", "--tenant t1", "Nothing was applied")
    assert not kit_tables(db_url)


def test_unparsable_postgresql_migration_is_refused_before_the_first_statement(
    tmp_path: Path, pub: Path, pg_dsn: str
) -> None:
    components, files = three_migrations()
    files["migrations/m2/up.sql"] = ("m2", b"-- m2\nCREATE TABLE a (x int);\n\nCREATE TABEL b (x int);\n")
    kit = craft_apply_kit(tmp_path / "bad-sql.kit.tar.zst", components, files)
    result = run_kit("apply", kit, "--key", pub, "--db", pg_dsn, "--artifacts", tmp_path / "a")
    assert result.exit_code == 8, result.output
    one_line_error(result.stderr, "database", "migrations/m2/up.sql:4", "statement 2")
    database = connect(pg_dsn, read_only=True)
    assert not database.table_exists("items") and not database.table_exists("kit_migrations")
    database.close()


def test_unwritable_artifacts_stop_the_run_before_it_starts(tmp_path: Path, pub: Path, db_url: str) -> None:
    components, files = three_migrations()
    kit = craft_apply_kit(tmp_path / "ok.kit.tar.zst", components, files)
    blocker = tmp_path / "artifacts-is-a-file"
    blocker.write_text("")
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", blocker / "sub")
    assert result.exit_code == 12, result.output
    one_line_error(result.stderr, "io", "--artifacts", "nothing was applied")
    assert not kit_tables(db_url)
    assert blocker.read_text() == ""


def test_crafted_kit_migration_text_is_what_runs(tmp_path: Path, pub: Path) -> None:
    """Sanity for the factory: the staged up.sql is the crafted one."""
    components, files = three_migrations()
    kit = craft_apply_kit(tmp_path / "ok.kit.tar.zst", components, files)
    db = tmp_path / "x.db"
    result = run_kit("apply", kit, "--key", pub, "--db", db, "--artifacts", tmp_path / "a", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plan"][0]["sql"] == GOOD_UP
    assert not db.exists() and os.path.isdir(tmp_path / "a")


def test_seed_row_without_its_key_is_refused_before_the_migrations_run(tmp_path: Path, pub: Path, db_url: str) -> None:
    components, files = three_migrations()
    components.append({"id": "s1", "role": "seed", "phase": "4", "options": {"table": "items", "key": ["id"]}})
    files["seeds/s1/rows.ndjson"] = ("s1", b'{"id": 1, "name": "a"}\n{"name": "no key"}\n')
    kit = craft_apply_kit(tmp_path / "seed.kit.tar.zst", components, files)
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a")
    assert result.exit_code == 5, result.output
    one_line_error(result.stderr, "format", "seed s1", "row 2", "id")
    assert not kit_tables(db_url)


def test_failing_statement_names_its_file_and_line(tmp_path: Path, pub: Path, db_url: str) -> None:
    components, files = three_migrations()
    files["migrations/m2/up.sql"] = ("m2", b"CREATE TABLE a2 (x int);\n\nINSERT INTO no_such_table VALUES (1);\n")
    kit = craft_apply_kit(tmp_path / "fails.kit.tar.zst", components, files)
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a")
    assert result.exit_code == 8, result.output
    one_line_error(result.stderr, "database", "m2", "statement 2 at migrations/m2/up.sql:3")


def test_unreachable_registry_is_found_before_the_database_changes(tmp_path: Path, pub: Path, db_url: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    components, files = three_migrations()
    kit = craft_apply_kit(tmp_path / "ok.kit.tar.zst", components, files)
    result = run_kit(
        "apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--registry", f"127.0.0.1:{port}"
    )
    assert result.exit_code == 11, result.output
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr
    assert not kit_tables(db_url) and not (tmp_path / "a").exists()
