"""Deterministic fault injection for kill, signal and concurrency tests.

Code calls ``point(name)`` at the instants a crash or a signal matters (a
batch about to commit, a lock just taken). Without the variables below it does
nothing. Tests set them in a child's environment instead of sleeping and
hoping the child is where they think it is:

- ``KIT_FAULT=name`` or ``name:N``: at the N-th hit (default 1) of ``name``,
  the process ends at once with exit 137, as a SIGKILL would (no cleanup, no
  ``finally``).
- ``KIT_FAULT_SIGNAL=SIG@name`` or ``SIG@name:N`` (``SIG`` = INT, TERM, …):
  at the N-th hit the process sends itself that signal.
- ``KIT_FAULT_WAIT=name:PATH`` or ``name:N:PATH``: at the N-th hit the
  process creates ``PATH.waiting`` and then waits until ``PATH`` exists, so a
  test can act while the process is held at that exact point. Several holds
  are separated by ``;`` (``a:PATH1;b:PATH2``): a test can act at two points
  of one run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_hits: dict[str, int] = {}


def _split(spec: str) -> tuple[str, int, str]:
    """``name[:N][:rest]`` → (name, N, rest)."""
    name, _, tail = spec.partition(":")
    count, _, rest = tail.partition(":")
    if count.isdigit():
        return name, int(count), rest
    return name, 1, tail


def point(name: str) -> None:
    """A named instant where a test may kill, signal or hold this process (see the module docstring)."""
    kill = os.environ.get("KIT_FAULT")
    send = os.environ.get("KIT_FAULT_SIGNAL")
    hold = os.environ.get("KIT_FAULT_WAIT")
    if not (kill or send or hold):
        return
    hit = _hits[name] = _hits.get(name, 0) + 1
    for spec in hold.split(";") if hold else ():
        target, count, path = _split(spec)
        if target == name and count == hit and path:
            Path(path + ".waiting").touch()
            while not Path(path).exists():
                time.sleep(0.01)
    if send:
        signame, _, where = send.partition("@")
        target, count, _ = _split(where)
        if target == name and count == hit:
            os.kill(os.getpid(), signal.Signals[f"SIG{signame.upper().removeprefix('SIG')}"])
    if kill:
        target, count, _ = _split(kill)
        if target == name and count == hit:
            os._exit(137)
