"""Deterministic fault injection for kill-and-rerun tests: ``KIT_FAULT=name`` or ``KIT_FAULT=name:N``.

At a named point, ``point(name)`` ends the process at once with exit status 137,
as a SIGKILL would (no cleanup, no finally blocks, no buffered output), when
``KIT_FAULT`` names that point: on its first hit, or on its N-th hit with
``name:N``. Without the variable it does nothing, so production runs pay one
dictionary lookup per point.
"""

from __future__ import annotations

import os

_hits: dict[str, int] = {}


def _wanted() -> tuple[str, int] | None:
    spec = os.environ.get("KIT_FAULT")
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    if name and count.isdecimal():
        return name, int(count)
    return spec, 1


def point(name: str) -> None:
    """Exit with status 137 here if ``KIT_FAULT`` names this point (and this is the hit it counts to)."""
    wanted = _wanted()
    if wanted is None or wanted[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == wanted[1]:
        os._exit(137)
