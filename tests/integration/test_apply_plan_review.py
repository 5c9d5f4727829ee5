"""An adversarial review of the plan side of ``kit apply``, on SQLite and PostgreSQL.

Each test is named after a defect the review found: a kit ``kit verify`` accepts must either apply or
be refused before the first statement (exit code, one line on stderr, the database untouched), and
what a check reports must be what the database holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect
from tests.factories.cli import run_kit
from tests.factories.crafted_apply import GOOD_UP, craft_apply_kit, good_migration
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair

Files = dict[str, tuple[str, bytes]]


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    return write_pair(RELEASE, tmp_path / "keys" / "release")[1]


def one_line_error(stderr: str, kind: str, *words: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"kit: {kind} error: "), stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"


def untouched(db_url: str) -> bool:
    """Nothing ran: neither kit's state tables nor the kit's own table exist."""
    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///") :]).exists():
        return True
    database = connect(db_url, read_only=True)
    try:
        return not database.table_exists("kit_runs") and not database.table_exists("items")
    finally:
        database.close()


def three_migrations() -> tuple[list[dict[str, Any]], Files]:
    components: list[dict[str, Any]] = []
    files: Files = {}
    for number in (1, 2, 3):
        component, payload = good_migration(f"m{number}", str(number))
        components.append(component)
        files.update(payload)
    return components, files


def with_seed(name: str, data: bytes) -> tuple[list[dict[str, Any]], Files]:
    components, files = three_migrations()
    components.append({"id": "s1", "role": "seed", "phase": "4", "options": {"table": "items", "key": ["id"]}})
    return components, {**files, f"seeds/s1/{name}": ("s1", data)}


def verify_then_apply(tmp_path: Path, pub: Path, db_url: str, kit: Path) -> Any:
    verified = run_kit("verify", kit, "--key", pub)
    assert verified.exit_code == 0, verified.output
    return run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a")


SEED_CASES = {
    # csv.DictReader filed the extra fields under the key None: exit 70 after three migrations, run left `running`.
    "csv row longer than its header": ("rows.csv", b"id,name\n1,a,extra,more\n", ("rows.csv:2", "4 fields")),
    "csv row shorter than its header": ("rows.csv", b"id,name,tenant\n1,a\n", ("rows.csv:2", "2 fields")),
    # Seed columns are written into the INSERT: a name that is not one broke the statement after the migrations.
    "csv header with an empty name": ("rows.csv", b"id,,name\n1,2,a\n", ("rows.csv:1", 'column ""')),
    "csv header naming a column twice": ("rows.csv", b"id,name,name\n1,a,b\n", ("rows.csv:1", "twice")),
    "ndjson column with a hyphen": ("rows.ndjson", b'{"id": 1, "created-at": "x"}\n', ("rows.ndjson:1", "created-at")),
    "ndjson column carrying SQL": (
        "rows.ndjson",
        b'{"id": 1, "name) VALUES (1); --": "x"}\n',
        ("rows.ndjson:1", "is not a column name"),
    ),
}


@pytest.mark.parametrize("case", sorted(SEED_CASES))
def test_seed_file_that_breaks_the_insert_is_refused_before_the_first_statement(
    case: str, tmp_path: Path, pub: Path, db_url: str
) -> None:
    name, data, words = SEED_CASES[case]
    components, files = with_seed(name, data)
    kit = craft_apply_kit(tmp_path / "seed.kit.tar.zst", components, files)
    result = verify_then_apply(tmp_path, pub, db_url, kit)
    assert result.exit_code == 5, result.output
    one_line_error(result.stderr, "format", "seed s1", *words)
    assert untouched(db_url)


def test_seed_file_with_well_formed_columns_still_loads(tmp_path: Path, pub: Path, db_url: str) -> None:
    components, files = with_seed("rows.csv", b"id,name,tenant\n1,a,t1\n2,b,t2\n\n")
    kit = craft_apply_kit(tmp_path / "seed.kit.tar.zst", components, files)
    result = verify_then_apply(tmp_path, pub, db_url, kit)
    assert result.exit_code == 0, result.output
    database = connect(db_url, read_only=True)
    try:
        assert database.query("SELECT id, name, tenant FROM items ORDER BY id") == [(1, "a", "t1"), (2, "b", "t2")]
    finally:
        database.close()


def test_sqlite_count_check_saw_zero_rows_in_a_table_spelled_another_way(
    tmp_path: Path, pub: Path, db_url: str
) -> None:
    """SQLite resolves `Items`, `main.items` and a view in a statement; the existence probe did not, so the
    count check reported 0 rows of a table holding 2 (a check that lies: `equals: 0` would have passed)."""
    component, files = good_migration("m1", "1")
    up = (
        GOOD_UP
        + "INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b');\nCREATE VIEW v_items AS SELECT * FROM items;\n"
    )
    files["migrations/m1/up.sql"] = ("m1", up.encode())
    schema = "main" if db_url.startswith("sqlite") else "public"
    tables = {"other-case": "Items", "schema-qualified": f"{schema}.items", "view": "v_items"}
    checks = [{"id": key, "kind": "count", "table": table, "expect": {"equals": 2}} for key, table in tables.items()]
    kit = craft_apply_kit(tmp_path / "count.kit.tar.zst", [component], files, checks=checks)
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    assert {c["id"]: c["observed"] for c in json.loads(result.stdout)["checks"]["after"]} == dict.fromkeys(tables, 2)


@pytest.mark.parametrize("table", ["a.b.c", "items.", ".items", "items..x"])
def test_table_name_with_more_than_a_schema_prefix_is_refused_by_verify(
    table: str, tmp_path: Path, pub: Path, db_url: str
) -> None:
    """`a.b.c` passed verify: PostgreSQL then failed the run (cross-database reference), SQLite counted 0 rows."""
    components, files = three_migrations()
    checks = [{"id": "rows", "kind": "count", "table": table, "expect": {"equals": 0}}]
    kit = craft_apply_kit(tmp_path / "dots.kit.tar.zst", components, files, checks=checks)
    verified = run_kit("verify", kit, "--key", pub)
    assert verified.exit_code == 5, verified.output
    one_line_error(verified.stderr, "format", "checks[0] (rows)", "table")
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a")
    assert result.exit_code == 5, result.output
    assert untouched(db_url)


JOB = b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\nset: {done: \"'y'\"}\n"

FRAGMENT_CASES: dict[str, tuple[bytes | None, list[dict[str, Any]], tuple[str, ...]]] = {
    "backfill predicate": (
        JOB.replace(b"done IS NULL", b"done IS NUL L"),
        [],
        ("backfill b1", "predicate", "does not parse"),
    ),
    "backfill key a reserved word": (JOB.replace(b"key: id", b"key: select"), [], ("backfill b1", "key")),
    "backfill set expression": (JOB.replace(b"\"'y'\"", b"\"'y' ||\""), [], ("backfill b1: set",)),
    "backfill update statement": (
        JOB.split(b"set:")[0] + b'update: "UPDATE items SET done = WHERE id BETWEEN :lo AND :hi"\n',
        [],
        ("backfill b1: update",),
    ),
    "backfill post_check where": (
        JOB + b"post_checks:\n  - {id: left, kind: count, table: items, where: 'done = = 1', expect: {equals: 0}}\n",
        [],
        ("backfill b1: post_checks left",),
    ),
    "count check where": (
        None,
        [{"id": "w", "kind": "count", "table": "items", "where": "name = = 1", "expect": {"equals": 0}}],
        ("check w (count)",),
    ),
    "unique check column a reserved word": (
        None,
        [{"id": "u", "kind": "unique", "table": "items", "columns": ["from"]}],
        ("check u (unique)",),
    ),
    "sql check query": (None, [{"id": "q", "kind": "sql", "query": "SELEC 1"}], ("check q (sql)",)),
}


@pytest.mark.parametrize("case", sorted(FRAGMENT_CASES))
def test_sql_fragment_that_cannot_parse_failed_after_every_migration_ran(
    case: str, tmp_path: Path, pub: Path, db_url: str
) -> None:
    """Predicates, set expressions, update statements, where clauses and names are spliced into SQL; one
    that is not grammatical for the database failed only when its step (or the final checks) came,
    after the migrations had run. Now every composed statement is parsed (PostgreSQL's parser, SQLite's
    own compiler on an empty database) before the first statement."""
    job, checks, words = FRAGMENT_CASES[case]
    components, files = three_migrations()
    if job is not None:
        components.append({"id": "b1", "role": "backfill", "phase": "4"})
        files["backfills/b1.yaml"] = ("b1", job)
    kit = craft_apply_kit(tmp_path / "fragment.kit.tar.zst", components, files, checks=checks)
    result = verify_then_apply(tmp_path, pub, db_url, kit)
    assert result.exit_code == 8, result.output
    one_line_error(result.stderr, "database", *words, "nothing was applied")
    assert untouched(db_url)


def test_grammatical_fragments_naming_what_the_kit_creates_still_apply(tmp_path: Path, pub: Path, db_url: str) -> None:
    """The control: tables, columns and functions that do not exist yet are not parse errors."""
    components, files = three_migrations()
    components.append({"id": "b1", "role": "backfill", "phase": "4"})
    job = (
        b"table: items\nkey: id\ntenant_column: tenant\npredicate: done IS NULL\n"
        b'update: "UPDATE items SET done = kit_sha256(name) WHERE id BETWEEN :lo AND :hi AND done IS NULL '
        b'AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)"\n'
        b"post_checks:\n  - {id: left, kind: count, table: items, where: done IS NULL, expect: {equals: 0}}\n"
    )
    files["backfills/b1.yaml"] = ("b1", job)
    checks = [
        {"id": "u", "kind": "unique", "table": "items", "columns": ["id", "name"], "where": "name::text <> ''"},
        {"id": "q", "kind": "sql", "query": "SELECT COUNT(*) = 0 FROM items WHERE done IS NULL"},
    ]
    if db_url.startswith("sqlite"):
        checks[0]["where"] = "CAST(name AS TEXT) <> ''"
    kit = craft_apply_kit(tmp_path / "ok.kit.tar.zst", components, files, checks=checks)
    result = verify_then_apply(tmp_path, pub, db_url, kit)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("tenant", [None, 't"q\\x\u00e9'])
def test_evidence_is_the_json_report_with_its_digest_and_metrics_parse(
    tenant: str | None, tmp_path: Path, pub: Path, db_url: str
) -> None:
    """report.json is the `--json` document (schema apply-report) minus `evidence`, which names the file's
    own digest; it records `ok` like `--json` does. metrics.prom parses with the Prometheus text parser,
    a tenant with quotes, a backslash and non-ASCII included."""
    from prometheus_client.parser import text_string_to_metric_families

    from kitbuilder.core import schemas

    components, files = three_migrations()
    up = GOOD_UP + "INSERT INTO items (id, name, tenant) VALUES (1, 'a', 'x'), (2, 'b', :t);\n"
    files["migrations/m1/up.sql"] = ("m1", up.replace(":t", "'" + (tenant or "y").replace("'", "''") + "'").encode())
    components.append({"id": "b1", "role": "backfill", "phase": "4"})
    files["backfills/b1.yaml"] = ("b1", JOB + b"metric: items_left\n")
    kit = craft_apply_kit(tmp_path / "evidence.kit.tar.zst", components, files)
    extra = ("--tenant", tenant) if tenant is not None else ()
    result = run_kit("apply", kit, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--json", *extra)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    directory = Path(printed["evidence"]["directory"])
    body = (directory / "report.json").read_bytes()
    import hashlib

    digest = hashlib.sha256(body).hexdigest()
    assert (directory / "report.json.sha256").read_text() == f"{digest}  report.json\n"
    assert printed["evidence"]["reportSha256"] == digest
    on_disk = json.loads(body)
    assert schemas.first_error("apply-report", {**on_disk, "evidence": printed["evidence"]}) is None
    assert {**on_disk, "evidence": printed["evidence"]} == printed
    families = {f.name: f for f in text_string_to_metric_families((directory / "metrics.prom").read_text())}
    [sample] = families["items_left"].samples
    assert sample.labels["job"] == "b1" and sample.labels.get("tenant") == tenant
    assert sample.value == 0
    assert families["kit_apply_success"].samples[0].value == 1


def test_tenant_value_the_tenant_column_cannot_hold_is_refused_before_the_first_statement(
    tmp_path: Path, pub: Path, db_url: str
) -> None:
    """PostgreSQL types ``:tenant`` by its column: ``--tenant abc`` against an integer column failed only when
    the backfill ran, after the kit's earlier migration had been applied. Now it is refused first, naming
    --tenant. (SQLite compares loosely: the value matches no row and the run succeeds.)"""
    integer_up = GOOD_UP.replace("tenant TEXT", "tenant INTEGER").encode()
    m1, m1_files = good_migration("m1", "1")
    m1_files["migrations/m1/up.sql"] = ("m1", integer_up)
    first = craft_apply_kit(tmp_path / "first.kit.tar.zst", [m1], m1_files)
    assert verify_then_apply(tmp_path, pub, db_url, first).exit_code == 0
    m2, m2_files = good_migration("m2", "2")
    components = [m1, m2, {"id": "b1", "role": "backfill", "phase": "2"}]
    files = {**m1_files, **m2_files, "backfills/b1.yaml": ("b1", JOB)}
    second = craft_apply_kit(tmp_path / "second.kit.tar.zst", components, files, sequence=2)
    result = run_kit("apply", second, "--key", pub, "--db", db_url, "--artifacts", tmp_path / "a", "--tenant", "abc")
    database = connect(db_url, read_only=True)
    try:
        applied = {row[0] for row in database.query("SELECT id FROM kit_migrations WHERE status = 'succeeded'")}
    finally:
        database.close()
    if db_url.startswith("sqlite"):
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    one_line_error(result.stderr, "usage", "--tenant 'abc'", "backfill b1", "nothing was applied")
    assert applied == {"m1"}
