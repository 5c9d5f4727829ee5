"""Typed apply jobs (core/jobs.py, kitchecks.py, backfilljob.py): every field apply reads is typed, the rest refused.

Each refusal is a FormatError naming where (component or check) and the field, so a kit that
``kit verify`` accepts can always be applied.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kitbuilder.core import jobs
from kitbuilder.core.jobs import (
    BackfillJob,
    CountCheck,
    Expect,
    ForeignKeyCheck,
    MigrationOptions,
    SeedOptions,
    SqlCheck,
    UniqueCheck,
    load_backfill_job,
    named_parameters,
    parse_check,
)
from kitbuilder.errors import FormatError, SpecError

JOB = {"table": "t", "key": "id", "predicate": "x IS NULL", "set": {"x": "1"}}


def refused(call: Any, *words: str) -> str:
    with pytest.raises(FormatError) as caught:
        call()
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message
    return message


def test_migration_options_defaults_and_values() -> None:
    assert MigrationOptions.from_json({}, "m") == MigrationOptions()
    options = MigrationOptions.from_json({"up": "a.sql", "transactional": False, "idempotent": True}, "m")
    assert (options.up, options.transactional, options.idempotent) == ("a.sql", False, True)
    # The spec schema writes its defaults into the manifest: a default name means "when present".
    assert MigrationOptions.from_json({"verify": "verify.sql", "revert": "revert.sql"}, "m").verify is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"up": ["up.sql"]}, "up"),
        ({"up": "../x.sql"}, "up"),
        ({"transactional": "false"}, "transactional"),
        ({"idempotent": 1}, "idempotent"),
        ({"transactionl": False}, "transactionl"),
    ],
)
def test_migration_options_wrong_types_and_unknown_fields_are_refused(options: dict[str, Any], field: str) -> None:
    refused(lambda: MigrationOptions.from_json(options, "component m1 (migration)"), "m1", field)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"table": "t", "key": 1}, "key"),
        ({"table": "t"}, "key"),
        ({"key": ["id"]}, "table"),
        ({"table": "t;drop", "key": ["id"]}, "table"),
        ({"table": "t", "key": ["id", "id"]}, "key"),
        ({"table": "t", "key": []}, "key"),
    ],
)
def test_seed_options_are_strict(options: dict[str, Any], field: str) -> None:
    refused(lambda: SeedOptions.from_json(options, "component s1 (seed)"), "s1", field)
    assert SeedOptions.from_json({"table": "t", "key": ["a", "b"]}, "s").key == ("a", "b")


def test_check_kinds_parse_to_their_own_class() -> None:
    count = parse_check({"id": "c", "kind": "count", "table": "t", "expect": {"delta": -3}, "on_fail": "warn"}, "x")
    assert count == CountCheck(id="c", table="t", expect=Expect("delta", -3), on_fail="warn")
    assert isinstance(parse_check({"id": "u", "kind": "unique", "table": "t", "columns": ["a"]}, "x"), UniqueCheck)
    fk = parse_check(
        {"id": "f", "kind": "foreign-key", "table": "c", "column": "p", "references": {"table": "p", "column": "id"}},
        "x",
    )
    assert isinstance(fk, ForeignKeyCheck) and fk.references_table == "p"
    assert isinstance(parse_check({"id": "s", "kind": "sql", "query": "SELECT 1", "expect": "truthy"}, "x"), SqlCheck)


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ({"id": "c", "kind": "count", "expect": "stable"}, "table"),
        ({"id": "c", "kind": "count", "table": "t"}, "expect"),
        ({"id": "c", "kind": "count", "table": "t", "expect": "truthy"}, "expect"),
        ({"id": "c", "kind": "count", "table": "t", "expect": {"equals": "3"}}, "expect"),
        ({"id": "c", "kind": "count", "table": "t", "expect": {"equals": True}}, "expect"),
        ({"id": "c", "kind": "count", "table": "t", "expect": {"max": 2**63}}, "expect"),
        ({"id": "c", "kind": "count", "table": "t", "expect": {"min": 1, "max": 2}}, "expect"),
        ({"id": "c", "kind": "unique", "table": "t"}, "columns"),
        (
            {
                "id": "c",
                "kind": "foreign-key",
                "table": "t",
                "column": "a",
                "where": "1=1",
                "references": {"table": "p", "column": "id"},
            },
            "where",
        ),
        ({"id": "c", "kind": "foreign-key", "table": "t", "column": "a", "references": {"table": "p"}}, "column"),
        ({"id": "c", "kind": "sql"}, "query"),
        ({"id": "c", "kind": "sql", "query": "SELECT 1", "table": "t"}, "table"),
        ({"id": "c", "kind": "sql", "query": "SELECT 1", "on_fail": "ignore"}, "on_fail"),
        ({"id": "c", "kind": "magic"}, "kind"),
        ({"kind": "sql", "query": "SELECT 1"}, "id"),
        ("count", "mapping"),
    ],
)
def test_each_check_kind_refuses_what_it_would_not_honour(check: Any, field: str) -> None:
    refused(lambda: parse_check(check, "manifest checks[0]"), "checks[0]", field)


def test_backfill_job_typed() -> None:
    job = BackfillJob.from_json(
        {
            **JOB,
            "batch_size": 7,
            "metric": "x_missing",
            "pre_checks": [{"id": "p", "kind": "sql", "query": "SELECT 1"}],
        },
        "job",
    )
    assert (job.batch_size, job.metric, job.set, job.pre_checks[0].id) == (7, "x_missing", (("x", "1"),), "p")
    assert job.tenant_problem == "declares no tenant_column"
    update = {**{k: v for k, v in JOB.items() if k != "set"}, "tenant_column": "tenant"}
    assert BackfillJob.from_json(
        {**update, "update": "UPDATE t SET x=1 WHERE id BETWEEN :lo AND :hi"}, "j"
    ).tenant_problem
    with_tenant = BackfillJob.from_json(
        {**update, "update": "UPDATE t SET x=1 WHERE id BETWEEN :lo AND :hi AND tenant = :tenant"}, "j"
    )
    assert with_tenant.tenant_problem is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2**63}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"error_rate_threshold": float("nan")}, "error_rate_threshold"),
        ({"error_rate_threshold": 2}, "error_rate_threshold"),
        ({"min_sample": "100"}, "min_sample"),
        ({"metric": "kit_apply_success"}, "metric"),
        ({"key": "id; DROP TABLE t"}, "key"),
        ({"set": {"x": 1}}, "set.x"),
        ({"set": {}}, "set"),
        ({"update": "UPDATE t SET x = 1 WHERE id BETWEEN :lo AND :hi"}, "exactly one"),
        ({"pre_checks": [{"id": "c", "kind": "count", "expect": "stable"}]}, "table"),
        ({"post_checks": [{"id": "c", "kind": "sql", "query": "SELECT 1", "phase": "1"}]}, "phase"),
        ({"pre_checks": {"id": "c"}}, "pre_checks"),
        ({"cron": "daily"}, "cron"),
    ],
)
def test_backfill_job_refusals(change: dict[str, Any], field: str) -> None:
    refused(lambda: BackfillJob.from_json({**JOB, **change}, "backfills/j.yaml"), "backfills/j.yaml", field)


def test_update_statement_parameters_are_checked_outside_quotes() -> None:
    assert named_parameters("UPDATE t SET a = ':x', b = c::text WHERE id BETWEEN :lo AND :hi") == {"lo", "hi"}
    base = {k: v for k, v in JOB.items() if k != "set"}
    refused(lambda: BackfillJob.from_json({**base, "update": "UPDATE t SET x = ':lo :hi'"}, "j"), ":lo and :hi")
    refused(
        lambda: BackfillJob.from_json({**base, "update": "UPDATE t SET x = :val WHERE id BETWEEN :lo AND :hi"}, "j"),
        ":val",
    )


def test_backfill_yaml_errors_name_the_line_and_raise_the_callers_error() -> None:
    text = "table: t\nkey: id\npredicate: x IS NULL\nset: {x: '1'}\nbatch_size: -1\n"
    with pytest.raises(FormatError, match=r"^backfills/j.yaml:5: batch_size"):
        load_backfill_job(text.encode(), "backfills/j.yaml")
    with pytest.raises(SpecError, match=r"^src/j.yaml:5: batch_size"):
        load_backfill_job(text, "src/j.yaml", error=SpecError)
    refused(lambda: load_backfill_job(b"\xff\xfe", "j.yaml"), "UTF-8")
    refused(lambda: load_backfill_job(b"table: t\ntable: u\n", "j.yaml"), "given twice")


def test_metric_names_cannot_take_kits_own() -> None:
    assert jobs.METRIC.fullmatch("raw_linkset_missing")
    assert not jobs.METRIC.fullmatch("kit_lock_wait_seconds")


def test_a_components_files_from_a_file_table_are_those_of_a_filter_over_every_entry() -> None:
    # Components in runs (one of them in two runs, one role shared by two components), from a table as verify reads
    # a format-2 list and from a tuple as format 1 holds its files: the same entries, in order.
    from kitbuilder.core.filelist import FileEntry, FileTable

    entries = (
        FileEntry("m/1/up.sql", 3, "a" * 64, "migration", "m", frame=0, at=0),
        FileEntry("m/2/up.sql", 4, "b" * 64, "migration", "m", frame=0, at=1024),
        FileEntry("docs/a.md", 5, "c" * 64, "doc", "docs", frame=0, at=2048),
        FileEntry("m/3/up.sql", 6, "d" * 64, "migration", "m", frame=0, at=3072),
        FileEntry("n/1/up.sql", 7, "e" * 64, "migration", "n", frame=0, at=4096),
    )
    table = FileTable.of(entries)
    for component in ("m", "docs", "n", "absent"):
        expected = [e for e in entries if e.component == component]
        assert jobs._entries_of(table, component) == expected == jobs._entries_of(entries, component)
    # component_files reads only the manifest's files.
    manifest: Any = SimpleNamespace(files=table)
    assert list(jobs.component_files(manifest, "m")) == ["1/up.sql", "2/up.sql", "3/up.sql"]
