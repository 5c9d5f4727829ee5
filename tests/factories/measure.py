"""`kit` in a child process with its own peak memory, for the resource-bound tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def under_coverage() -> bool:
    """Whether tests run under coverage (pytest-cov passes COV_CORE_* to children, which then trace every line)."""
    return "coverage" in sys.modules or any(name.startswith("COV_CORE_") for name in os.environ)


def kit_peak(*args: object) -> tuple[int, str, int]:
    """`kit ARGS` in a child process: exit code, stderr and the child's own peak RSS in bytes (from wait4).

    Skips the calling test under coverage: the tracer's own memory would be measured, not kit's.
    """
    if under_coverage():
        pytest.skip("a memory bound measured under coverage measures the tracer, not kit")
    with subprocess.Popen(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        assert child.stderr is not None
        stderr = child.stderr.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, stderr, usage.ru_maxrss * 1024
