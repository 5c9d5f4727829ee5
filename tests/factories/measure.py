"""`kit` in a child process with its own peak memory, for the resource-bound tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def under_coverage() -> bool:
    """Whether tests run under coverage (pytest-cov passes COV_CORE_* to children, which then trace every line)."""
    return "coverage" in sys.modules or any(name.startswith("COV_CORE_") for name in os.environ)


def kit_peak(*args: object, runs: int = 1) -> tuple[int, str, int]:
    """`kit ARGS` in a child process: exit code, stderr and the child's own peak RSS in bytes.

    With ``runs`` > 1, the smallest peak of that many runs (each must exit as the first did): what the command
    needs, without the allocator's run-to-run scatter (worker threads' arenas and freed frame buffers add a few
    MiB to some runs and not to others), for a bound with a thin margin.

    The peak comes from GNU time when it is installed: a process's ru_maxrss starts at the RSS of the process it
    was forked from (exec keeps the old address space's high-water mark), so wait4() here would report at least
    this test process's own peak, and a bound below it could never fail. GNU time forks kit from a process of a
    few MiB. Without it, wait4() (then the figure is only an upper bound).

    Skips the calling test under coverage: the tracer's own memory would be measured, not kit's.
    """
    if under_coverage():
        pytest.skip("a memory bound measured under coverage measures the tracer, not kit")
    code, stderr, peak = _peak_once(args)
    for _ in range(runs - 1):
        again, _, other = _peak_once(args)
        assert again == code, f"kit {' '.join(map(str, args))}: exit {again}, then {code}"
        peak = min(peak, other)
    return code, stderr, peak


def _peak_once(args: tuple[object, ...]) -> tuple[int, str, int]:
    command = [sys.executable, "-m", "kitbuilder.cli", *map(str, args)]
    timer = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    with tempfile.NamedTemporaryFile(prefix="kit-peak-") as report:
        if timer is not None:
            command = [timer, "-f", "%M", "-o", report.name, *command]
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
            assert child.stderr is not None
            stderr = child.stderr.read().decode()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss
        if timer is not None:
            # time writes "Command exited with non-zero status N" first when it does; %M is the last line.
            reported = [line.strip() for line in Path(report.name).read_text().splitlines() if line.strip()]
            peak = int(reported[-1]) if reported and reported[-1].isdigit() else peak
    return child.returncode, stderr, peak * 1024
