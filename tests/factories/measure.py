"""`kit` in a child process with its own peak memory, for the resource-bound tests."""

from __future__ import annotations

import os
import subprocess
import sys


def kit_peak(*args: object) -> tuple[int, str, int]:
    """`kit ARGS` in a child process: exit code, stderr and the child's own peak RSS in bytes (from wait4)."""
    with subprocess.Popen(
        [sys.executable, "-m", "kitbuilder.cli", *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        assert child.stderr is not None
        stderr = child.stderr.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, stderr, usage.ru_maxrss * 1024
