"""Kit specs from bytes, with what the sources hold given as listings: no file is opened or stat-ed here
(ops/specfile does that), so each case is a spec text and, where it matters, a listing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kitbuilder.core.jobs import CountCheck
from kitbuilder.core.spec import KitSpec, SourceListing, check_sources, parse_spec
from kitbuilder.errors import SpecError

SPEC = Path("/nowhere/kit.yaml")  # never touched: the parser works on the bytes
HEAD = 'apiVersion: kitbuilder/v1\nname: demo\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\nproduct: demo\n'
MIGRATION = "migrations:\n  - id: m1\n    source: db/m1\n    phase: schema\n"
SEED = "seeds:\n  - id: s1\n    source: db/s1\n    table: t\n    key: [id]\n"
BACKFILL = "backfills:\n  - id: b1\n    source: db/b1\n"


def parse(text: str) -> KitSpec:
    return parse_spec(text.encode(), path=SPEC)


def refused(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(text)
    assert expected in str(caught.value)


def test_a_spec_is_parsed_hashed_and_its_sources_joined_not_resolved() -> None:
    text = HEAD + MIGRATION + "checks:\n  - id: c1\n    kind: count\n    table: t\n    expect: stable\n"
    spec = parse(text)
    assert spec.sha256 == hashlib.sha256(text.encode()).hexdigest()
    (component,) = spec.components
    assert (component.role, component.source, component.dest) == ("migration", Path("/nowhere/db/m1"), "migrations/m1")
    assert component.location == ("migrations", 0) and component.source_text == "db/m1"
    assert isinstance(spec.checks[0], CountCheck) and spec.checks[0].table == "t"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEAD + MIGRATION + MIGRATION.replace("migrations:\n", ""),
            "kit.yaml:11: migrations[1].id: id 'm1' is already",
        ),
        (HEAD, "kit.yaml:1: (top level): the spec lists no components"),
        (
            HEAD + MIGRATION + "checks:\n  - id: c\n    kind: sql\n    query: select 1\n    phase: data\n",
            "kit.yaml:15: checks[0].phase: 'data' is not a phase",
        ),
        (
            HEAD
            + MIGRATION
            + "checks:\n  - id: c\n    kind: sql\n    query: select 1\n" * 1
            + "  - id: c\n    kind: sql\n    query: select 2\n",
            "checks[1].id: check id 'c' is used twice",
        ),
        (
            HEAD
            + MIGRATION
            + "checks:\n  - id: c\n    kind: count\n    table: t\n    expect: stable\n    columns: [a]\n",
            "kit.yaml:12: checks[0]: check (c): unknown field 'columns'",
        ),
        (HEAD.replace("2099-01-01", "2099-02-30") + MIGRATION, "kit.yaml:5: expires: expected an RFC 3339"),
    ],
    ids=["duplicate-id", "no-components", "unknown-phase", "duplicate-check", "check-field", "impossible-date"],
)
def test_a_spec_defect_names_file_line_and_field(text: str, expected: str) -> None:
    refused(text, expected)


def test_spec_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(SpecError, match="kit.yaml: cannot read spec"):
        parse_spec(b"\xff\xfe", path=SPEC)


def listing(*files: str, is_dir: bool = True) -> SourceListing:
    return SourceListing(is_dir=is_dir, files=frozenset(files))


def checked(text: str, listings: dict[str, SourceListing], job: bytes = b"") -> None:
    check_sources(parse(text), listings, read_job=lambda path: job)


def test_sources_holding_what_apply_needs_pass() -> None:
    job = b"table: t\nkey: id\npredicate: x is null\nset:\n  x: '1'\n"
    checked(
        HEAD + MIGRATION + SEED + BACKFILL,
        {"m1": listing("up.sql"), "s1": listing("rows.csv"), "b1": listing("job.yaml")},
        job,
    )


@pytest.mark.parametrize(
    ("text", "source", "expected"),
    [
        (MIGRATION, listing("down.sql"), "kit.yaml:8: migrations[0].up: migration m1: /nowhere/db/m1/up.sql not found"),
        (MIGRATION, listing("up.sql", is_dir=False), "migrations[0].source: migration m1: expected a directory"),
        (MIGRATION + "    revert: undo.sql\n", listing("up.sql"), "migrations[0].revert: migration m1"),
        (
            MIGRATION + "    transactional: false\n",
            listing("up.sql"),
            "migrations[0].transactional: migration m1: transactional: false needs idempotent: true",
        ),
        (SEED, listing("rows.txt", "more/rows.tsv"), "seeds[0].source: seed s1: no .ndjson/.jsonl/.csv file"),
        (BACKFILL, listing("sub/job.yaml"), "backfills[0].source: backfill b1: /nowhere/db/b1/job.yaml not found"),
    ],
    ids=["no-up", "file-not-dir", "named-revert-missing", "non-transactional", "seed-no-data", "backfill-no-job"],
)
def test_a_source_missing_what_apply_needs_is_named(text: str, source: SourceListing, expected: str) -> None:
    component_id = "m1" if text.startswith("migrations") else "s1" if text.startswith("seeds") else "b1"
    with pytest.raises(SpecError) as caught:
        checked(HEAD + text, {component_id: source})
    assert expected in str(caught.value)


def test_a_backfill_job_is_checked_from_its_bytes_naming_its_file() -> None:
    with pytest.raises(SpecError, match=r"^/nowhere/db/b1:1: \(top level\): 'key' is a required property"):
        checked(HEAD + BACKFILL, {"b1": listing("b1", is_dir=False)}, b"table: 7\n")


def test_bad_migration_options_are_a_spec_error_naming_the_line() -> None:
    # Read strictly for the role when the spec is parsed (they were a FormatError, exit 5, with no line).
    with pytest.raises(SpecError, match=r"kit.yaml:\d+: migrations\[0\]: migration m1: options: up"):
        checked(HEAD + MIGRATION + "    up: ../x.sql\n", {"m1": listing("up.sql")})
