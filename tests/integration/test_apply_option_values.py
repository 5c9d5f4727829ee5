"""Numeric apply options the user types are refused unless they mean one thing on every database.

`--lock-timeout inf` ended in an internal error (exit 70) before anything was checked; `nan` was taken as "do not
wait"; a value past PostgreSQL's `lock_timeout` range (about 24.8 days) failed only there, as a database error
(exit 8), while SQLite took it; `--error-rate nan` passed the range check and never paused a backfill. Each is
bad input: exit 2, naming the option, no traceback, and the database untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import Applier, build_fault_kit
from tests.factories.keys import ed25519_key, write_pair

# The longest wait every backend honours as given: PostgreSQL's lock_timeout holds at most 2^31 - 1 milliseconds.
LONGEST = "2147483"


@pytest.fixture(scope="module")
def applier_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("option-kit")
    key, pub = write_pair(ed25519_key("release"), root / "release")
    return build_fault_kit(root, key), pub


def _untouched(db_url: str) -> bool:
    try:
        database = connect(db_url, create=False)
    except Exception:  # SQLite: the file was never created
        return True
    try:
        return not database.table_exists("kit_migrations") and not database.table_exists("kit_runs")
    finally:
        database.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lock-timeout", "inf"),
        ("--lock-timeout", "-inf"),
        ("--lock-timeout", "nan"),
        ("--lock-timeout", "-1"),
        ("--lock-timeout", "1e10"),
        ("--lock-timeout", "2147484"),
        ("--error-rate", "nan"),
    ],
)
def test_a_value_no_database_can_honour_is_refused(
    applier_parts: tuple[Path, Path], db_url: str, tmp_path: Path, option: str, value: str
) -> None:
    kit, pub = applier_parts
    result = Applier(kit, pub, tmp_path / "artifacts").run(db_url, option, value)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr and "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert _untouched(db_url)


def test_the_longest_lock_timeout_is_honoured_on_every_database(
    applier_parts: tuple[Path, Path], db_url: str, tmp_path: Path
) -> None:
    kit, pub = applier_parts
    result = Applier(kit, pub, tmp_path / "artifacts").run(db_url, "--lock-timeout", LONGEST)
    assert result.returncode == 0, result.stderr
