"""A kit shaped like the seed runbooks: 21-101 schema, 21-102 raw-linkset backfill, 21-103 seed, checks."""

from __future__ import annotations

from pathlib import Path

UP_101 = """\
CREATE TABLE IF NOT EXISTS advisory_observations (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_observations_tenant ON advisory_observations (tenant, id);
"""
VERIFY_101 = "SELECT COUNT(*) >= 0 FROM advisory_observations;\n"
REVERT_101 = "DROP INDEX IF EXISTS ix_observations_tenant;\nDROP TABLE IF EXISTS advisory_observations;\n"

UP_102 = """\
ALTER TABLE advisory_observations ADD COLUMN raw_linkset TEXT CHECK (raw_linkset IS NULL OR raw_linkset <> 'POISON');
CREATE TABLE IF NOT EXISTS advisory_supersedes (
    observation_id INTEGER NOT NULL REFERENCES advisory_observations (id),
    superseded_by INTEGER NOT NULL,
    PRIMARY KEY (observation_id, superseded_by)
);
"""
VERIFY_102 = "SELECT COUNT(*) >= 0 FROM advisory_supersedes;\n"
REVERT_102 = "DROP TABLE IF EXISTS advisory_supersedes;\nALTER TABLE advisory_observations DROP COLUMN raw_linkset;\n"

JOB = """\
description: Populate raw_linkset for observations created before it existed.
table: advisory_observations
key: id
tenant_column: tenant
predicate: raw_linkset IS NULL
set:
  raw_linkset: "CASE WHEN document LIKE '%poison%' THEN 'POISON' ELSE 'raw:' || document END"
revert: "UPDATE advisory_observations SET raw_linkset = NULL"
metric: raw_linkset_missing
"""

UP_103 = """\
CREATE TABLE IF NOT EXISTS cas_uri_map (
    key TEXT PRIMARY KEY,
    uri TEXT NOT NULL
);
"""

SPEC = """\
apiVersion: kitbuilder/v1
name: lnm-apply
version: "2025.11.2"
sequence: {sequence}
expires: "2099-01-01T00:00:00Z"
product: stellaops-concelier
migrations:
  - id: 21-101-shards
    phase: "21-101"
    source: src/21-101
  - id: 21-102-supersedes
    phase: "21-102"
    source: src/21-102
  - id: 21-103-cas-map
    phase: "21-103"
    source: src/21-103
backfills:
  - id: raw-linkset
    phase: "21-102"
    source: src/backfill/raw-linkset.yaml
seeds:
  - id: cas-uri-map
    phase: "21-103"
    source: src/seeds
    table: cas_uri_map
    key: [key]
checks:
  - id: observations-stable
    kind: count
    table: advisory_observations
    expect: stable
  - id: no-raw-linkset-missing
    kind: count
    table: advisory_observations
    where: raw_linkset IS NULL
    expect: {{max: {max_missing}}}
    on_fail: {missing_on_fail}
  - id: cas-keys-unique
    kind: unique
    table: cas_uri_map
    columns: [key]
  - id: supersedes-edges-valid
    kind: foreign-key
    table: advisory_supersedes
    column: observation_id
    references: {{table: advisory_observations, column: id}}
  - id: fk-pragma
    kind: sqlite-foreign-key-check
  - id: seeded
    kind: count
    table: cas_uri_map
    expect: {{equals: 3}}
"""


def write_apply_kit_source(
    root: Path, *, sequence: int = 1, max_missing: int = 0, missing_on_fail: str = "halt"
) -> Path:
    for phase, (up, verify, revert) in {
        "21-101": (UP_101, VERIFY_101, REVERT_101),
        "21-102": (UP_102, VERIFY_102, REVERT_102),
        "21-103": (UP_103, "SELECT COUNT(*) >= 0 FROM cas_uri_map;\n", "DROP TABLE IF EXISTS cas_uri_map;\n"),
    }.items():
        directory = root / "src" / phase
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "up.sql").write_text(up)
        (directory / "verify.sql").write_text(verify)
        (directory / "revert.sql").write_text(revert)
    (root / "src/backfill").mkdir(parents=True, exist_ok=True)
    (root / "src/backfill/raw-linkset.yaml").write_text(JOB)
    (root / "src/seeds").mkdir(parents=True, exist_ok=True)
    (root / "src/seeds/cas.ndjson").write_text(
        "".join(f'{{"key": "obs-{i}", "uri": "cas://sha256/{i:064x}"}}\n' for i in range(3))
    )
    spec = root / "apply.yaml"
    spec.write_text(SPEC.format(sequence=sequence, max_missing=max_missing, missing_on_fail=missing_on_fail))
    return spec


def populate_observations_sql(count: int, *, tenants: int = 3, poison_every: int = 0) -> list[str]:
    """INSERT statements for ``count`` pre-existing observations (before raw_linkset exists)."""
    rows = []
    for i in range(1, count + 1):
        document = f"doc-{i}" + ("-poison" if poison_every and i % poison_every == 0 else "")
        rows.append(f"({i}, 'tenant-{i % tenants}', '{document}', '2025-10-01')")
    statements = []
    for start in range(0, len(rows), 500):
        chunk = ", ".join(rows[start : start + 500])
        statements.append(f"INSERT INTO advisory_observations (id, tenant, document, created_at) VALUES {chunk}")
    return statements
