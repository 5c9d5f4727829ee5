"""SIGINT and SIGTERM during kit apply: stop at the next safe point, never half-way, never as a row error.

While the database work runs (``deferred()``), a signal only raises a flag
and interrupts the statement in flight; the database boundary (``db.py``)
turns the flag into ``InterruptedRun`` before the next statement, or when the
interrupted statement comes back with a driver error. The open transaction
therefore rolls back whole (a batch, a migration), the run loop records the
run ``interrupted``, releases the lock and writes its evidence, and the CLI
exits 130 (SIGINT) or 143 (SIGTERM). A second signal while the first is being
handled stops at once (the transaction still rolls back). Outside
``deferred()`` (verifying the kit) a signal stops at once. Inside ``shielded()``
(recording a run whose outcome is already decided) a first signal is too late
to stop anything: it neither interrupts a statement nor raises at a checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from kitbuilder.errors import InterruptedRun

HANDLED = (signal.SIGINT, signal.SIGTERM)


class _Stop(BaseException):
    """Raised from the handler when kit must stop now; becomes InterruptedRun when ``handling()`` exits."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


_received: int | None = None  # first signal received in this handling() block
_count = 0
_consumed = False
_deferring = 0
_shielding = 0
_interrupters: list[Callable[[], None]] = []


def _name(signal_number: int) -> str:
    return signal.Signals(signal_number).name


def interrupted_run(signal_number: int) -> InterruptedRun:
    return InterruptedRun(
        f"stopped by {_name(signal_number)} at a safe point (the open transaction was rolled back); "
        "rerun the same command to resume",
        signal_number=signal_number,
    )


def _handler(signal_number: int, frame: FrameType | None) -> None:
    global _received, _count
    _count += 1
    if _received is None:
        _received = signal_number
    if not _deferring or _count > 1:
        raise _Stop(_received)
    if _shielding:
        return
    for interrupt in list(_interrupters):
        with contextlib.suppress(Exception):
            interrupt()


def received() -> int | None:
    """The signal that asked kit to stop, if any (the database boundary classifies driver errors with it)."""
    return None if _shielding else _received


def checkpoint() -> None:
    """A safe point: raise InterruptedRun once if a signal arrived."""
    global _consumed
    if _received is not None and not _consumed and not _shielding:
        _consumed = True
        raise interrupted_run(_received)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for one command (main thread only), restore them afterwards."""
    global _received, _count, _consumed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in HANDLED}
    _received, _count, _consumed = None, 0, False
    for number in HANDLED:
        signal.signal(number, _handler)
    try:
        yield
    except _Stop as stop:
        raise interrupted_run(stop.signal_number) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received, _count, _consumed = None, 0, False


@contextlib.contextmanager
def deferred(interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Database work: a signal raises the flag (and calls ``interrupt``) instead of stopping at once."""
    global _deferring
    _deferring += 1
    if interrupt is not None:
        _interrupters.append(interrupt)
    try:
        yield
    finally:
        _deferring -= 1
        if interrupt is not None:
            _interrupters.remove(interrupt)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Recording a run whose outcome is decided (evidence, kit_runs, the lock): a first signal waits it out."""
    global _shielding
    _shielding += 1
    try:
        yield
    finally:
        _shielding -= 1
