"""Reading a spec from disk: one bounded read of a regular file (hashed as read), sources resolved and
checked, and what a migration, seed or backfill holds listed from its directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kitbuilder.errors import SpecError, UsageError
from kitbuilder.ops.specfile import load_spec

HEAD = 'apiVersion: kitbuilder/v1\nname: demo\nversion: "1"\nsequence: 1\nexpires: "2099-01-01"\nproduct: demo\n'


def write(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "kit.yaml"
    spec.write_text(HEAD + body)
    return spec


def test_the_spec_is_hashed_as_read_and_sources_come_back_resolved(tmp_path: Path) -> None:
    (tmp_path / "db" / "m1").mkdir(parents=True)
    (tmp_path / "db" / "m1" / "up.sql").write_text("create table t (id int);\n")
    spec_path = write(tmp_path, "migrations:\n  - id: m1\n    source: ./db/../db/m1\n    phase: schema\n")
    spec = load_spec(spec_path)
    assert spec.sha256 == hashlib.sha256(spec_path.read_bytes()).hexdigest()
    assert spec.components[0].source == (tmp_path / "db" / "m1").resolve()


def test_a_missing_source_names_the_line_and_field(tmp_path: Path) -> None:
    spec_path = write(tmp_path, "docs:\n  - id: d\n    source: nowhere\n")
    with pytest.raises(SpecError, match=r"kit.yaml:9: docs\[0\].source: nowhere does not exist"):
        load_spec(spec_path)


def test_a_migration_directory_without_its_up_script_is_named(tmp_path: Path) -> None:
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "nested").mkdir()
    (tmp_path / "m1" / "nested" / "up.sql").write_text("select 1;\n")
    spec_path = write(tmp_path, "migrations:\n  - id: m1\n    source: m1\n    phase: schema\n")
    with pytest.raises(SpecError, match=r"migrations\[0\].up: migration m1: .*/m1/up.sql not found"):
        load_spec(spec_path)


def test_a_backfill_job_that_is_not_a_regular_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "b1").mkdir()
    (tmp_path / "b1" / "job.yaml").mkdir()
    spec_path = write(tmp_path, "backfills:\n  - id: b1\n    source: b1\n")
    with pytest.raises(SpecError, match="backfills\\[0\\].source: backfill b1: .*job.yaml not found"):
        load_spec(spec_path)


def test_a_spec_that_is_a_fifo_or_missing_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="fifo.yaml: cannot read spec \\(not a regular file\\)"):
        load_spec(fifo)
    with pytest.raises(SpecError, match="absent.yaml: cannot read spec"):
        load_spec(tmp_path / "absent.yaml")
