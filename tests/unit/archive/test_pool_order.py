"""The ordered pool hands results back in submission order, and a job's fault only after every result before it.

A caller consumes results in order and may find a fault in one of them itself (the scan's consumer compares a large
member's digest at its last chunk, claims each path, writes extracted files). So a batch the pool hands back
(``submit`` making room, ``take_done``) must stop before a failed job: raising its error while results before it
are dropped unconsumed would report a later fault than the first one in file order. Synchronised with events and
the pool's own blocking, never with sleeps.
"""

from __future__ import annotations

import threading

import pytest

from kitbuilder.archive.pool import OrderedPool


class _Fault(Exception):
    pass


def _ok(value: str) -> str:
    return value


def _signal(event: threading.Event, value: str) -> str:
    event.set()
    return value


def _fails() -> str:
    raise _Fault("the later job's fault")


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_making_room_hands_back_the_results_before_a_failed_job_first(threads: int) -> None:
    with OrderedPool[str](threads, max_inflight=10) as pool:
        assert pool.submit(lambda: _ok("a"), 5) == []
        assert pool.submit(_fails, 5) == []
        # No room for 10 more: "a" must be taken, then the failed job. "a" comes back first; its consumer may hold
        # the first fault in order, so the failed job's error waits for the next take.
        assert pool.submit(lambda: _ok("c"), 10) == ["a"]
        with pytest.raises(_Fault):
            list(pool.drain())


def test_take_done_stops_before_a_failed_job() -> None:
    ran = threading.Event()
    with OrderedPool[str](1, max_inflight=1 << 20) as pool:
        pool.submit(lambda: _ok("a"), 1)
        pool.submit(_fails, 1)
        pool.submit(lambda: _signal(ran, "c"), 1)
        # One worker runs jobs in order and settles each before it starts the next: once the third has started,
        # "a" is done and the failed job is done too.
        assert ran.wait(timeout=60)
        assert pool.take_done() == ["a"]
        with pytest.raises(_Fault):
            pool.take_done()
