"""A kit whose one backfill touches every row exactly once, with an integer or a text key (for --workers tests).

Every row ends ``done = 'v2:' || payload`` and ``attempts = 1``: a row applied
twice shows ``attempts = 2``, a row lost shows ``done IS NULL``. The rows are
made by PostgreSQL (generate_series); these kits are for PostgreSQL runs, and
for refusals that come before the first statement.
"""

from __future__ import annotations

from pathlib import Path

from kitbuilder.apply.db import Database

ROWS = 600
BATCH = 25

SPEC = """\
apiVersion: kitbuilder/v1
name: workers-test
version: "1"
sequence: 1
expires: "2099-01-01"
product: test
migrations:
  - id: m1-rows
    phase: "1"
    source: src/m1
backfills:
  - id: touch
    phase: "2"
    source: src/touch.yaml
"""

KEYS = {
    "int": ("BIGINT", "i"),
    # Text keys whose order is not their numbers' ('doc-10' < 'doc-9'): ranges follow the key's own ordering.
    "text": ("TEXT", "'doc-' || i"),
    # Keys a cursor keeps as JSON strings (PostgreSQL casts the text back): a UUID, a decimal, an instant, text
    # beyond ASCII.
    "uuid": ("UUID", "CAST(md5(CAST(i AS TEXT)) AS UUID)"),
    "numeric": ("NUMERIC(12, 3)", "i + 0.125"),
    "timestamptz": ("TIMESTAMPTZ", "TIMESTAMPTZ '2020-01-01 00:00:00+00' + i * INTERVAL '1.25 seconds'"),
    "unicode": ("TEXT", "'clé-\"' || i || '-ü'"),
    # A linguistic collation (ICU, root locale): 'doc-b' < 'Doc-C' < 'doc-d', where C puts every 'D' first.
    "icu": ('TEXT COLLATE "und-x-icu"', "CASE WHEN i % 2 = 0 THEN 'Doc-' ELSE 'doc-' END || chr(97 + i % 26) || i"),
}


def job_yaml(done: str = "'v2:' || payload") -> str:
    return f"""\
table: items
key: id
tenant_column: tenant
predicate: done IS NULL
set:
  done: "{done}"
  attempts: "attempts + 1"
batch_size: {BATCH}
"""


def write_kit_source(
    root: Path,
    key: str = "int",
    *,
    done: str = "'v2:' || payload",
    rows: int = ROWS,
    constraint: str = "PRIMARY KEY",
    extra_sql: str = "",
) -> Path:
    """The kit's source: ``rows`` rows keyed by ``KEYS[key]`` (declared ``constraint``), then ``extra_sql``.

    Rows belong to tenants t0, t1, t2 (``i % 3``).
    """
    column, expression = KEYS[key]
    (root / "src/m1").mkdir(parents=True, exist_ok=True)
    (root / "src/m1/up.sql").write_text(
        f"CREATE TABLE items (id {column} {constraint}, tenant TEXT NOT NULL, payload TEXT NOT NULL, done TEXT, "
        "attempts INTEGER NOT NULL DEFAULT 0);\n"
        f"INSERT INTO items (id, tenant, payload) SELECT {expression}, 't' || (i % 3), 'payload-' || i "
        f"FROM generate_series(1, {rows}) i;\n{extra_sql}"
    )
    (root / "src/touch.yaml").write_text(job_yaml(done))
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    return spec


def items(database: Database) -> list[tuple[object, ...]]:
    return database.query("SELECT id, done, attempts FROM items ORDER BY id")


def assert_every_row_once(database: Database, rows: int = ROWS, where: str = "TRUE") -> None:
    """Every row (``where``) applied exactly once: none lost, none twice; the table holds ``rows`` rows."""
    bad = database.query(
        f"SELECT id, done, attempts FROM items WHERE ({where}) AND (done IS DISTINCT FROM 'v2:' || payload "
        "OR attempts <> 1) LIMIT 5"
    )
    assert not bad, f"rows not applied exactly once: {bad}"
    assert database.query_value("SELECT COUNT(*) FROM items") == rows


def ranges(database: Database) -> list[tuple[object, ...]]:
    """The recorded key ranges of the job: (range_no, lo, hi) as stored."""
    return database.query("SELECT range_no, lo_value, hi_value FROM kit_backfill_ranges WHERE job = 'touch' ORDER BY 1")
