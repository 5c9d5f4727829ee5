"""The error tree is the exit-code contract: docs/exit-codes.md documents exactly what errors.py derives."""

from __future__ import annotations

import re
from pathlib import Path

from kitbuilder.errors import EXIT_CODES, CheckFailedError, FailedRunError, HostIOError, InterruptedRun, KitError

DOC = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def _documented() -> dict[str, set[int]]:
    table: dict[str, set[int]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        row = re.fullmatch(r"\|\s*(\d+)\s*\|\s*([^|]*)\|.*", line)
        if row is None:
            continue
        for kind in re.findall(r"`([a-z]+)`", row.group(2)):
            table.setdefault(kind, set()).add(int(row.group(1)))
    return table


def test_every_kind_in_the_tree_is_documented_with_its_code() -> None:
    documented = _documented()
    for kind, code in EXIT_CODES.items():
        if kind == "ok":
            continue
        assert code in documented.get(kind, set()), f"{kind} (exit {code}) is missing from docs/exit-codes.md"


def test_documented_kinds_all_exist_in_the_tree() -> None:
    assert set(_documented()) <= set(EXIT_CODES)


def test_every_error_class_has_its_own_kind_and_an_exit_code() -> None:
    def walk(cls: type[KitError]) -> list[type[KitError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    # FailedRunError has no kind of its own: each carries its cause's kind and exit code (tested below).
    for cls in (c for c in walk(KitError)[1:] if c is not FailedRunError):
        assert EXIT_CODES[cls.kind] == cls.exit_code, cls.__name__
        assert cls.exit_code not in (0, 1, EXIT_CODES["internal"]), cls.__name__


def test_interrupt_exit_codes_follow_the_signal() -> None:
    assert InterruptedRun(signal_number=2).exit_code == 130
    assert InterruptedRun(signal_number=15).exit_code == 143


def test_io_error_names_the_path_and_what_to_do() -> None:
    error = HostIOError.from_os_error(OSError(28, "No space left on device"), path="/srv/out/x.kit.tar.zst")
    assert str(error) == "/srv/out/x.kit.tar.zst: cannot write (No space left on device): free space there and rerun"
    assert error.exit_code == 12


def test_a_failed_run_carries_its_cause_and_the_report_given_when_built() -> None:
    cause = InterruptedRun("stopped by SIGTERM", signal_number=15)
    failed = FailedRunError(cause, report={"status": "interrupted", "steps": []})
    assert (failed.kind, failed.exit_code, str(failed)) == ("interrupted", 143, "stopped by SIGTERM")
    assert failed.cause is cause and dict(failed.report) == {"status": "interrupted", "steps": []}
    check = FailedRunError(CheckFailedError("backfill paused"), report={})
    assert (check.kind, check.exit_code) == ("check", 10)
    assert "error" not in EXIT_CODES, "the wrapper adds no kind of its own to the exit-code table"
