"""A bounded pool of worker threads whose results are consumed in submission order.

Compressing and decompressing zstd frames (python-zstandard) and SHA-256 (hashlib)
release the GIL, so frames run on all cores. The caller submits jobs in order and
takes results in the same order; ``submit`` blocks (by taking the oldest result
first) once the bytes in flight pass ``max_inflight``, so memory stays flat whatever
the input size. With ``threads`` 0 every job runs inline: the same results, one core.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")

# The most worker threads a pool may be asked for: far more than any host's cores, few enough that every thread a
# pool may start (one per job in flight, at most this many) is affordable.
MAX_THREADS = 256


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class _Done(Generic[T]):
    """A finished job standing in for a future (inline mode): its result, or the exception it raised, which is
    raised when the result is taken, in order, as a worker's would be."""

    def __init__(self, job: Callable[[], T]) -> None:
        self._error: BaseException | None = None
        try:
            self._value: T | None = job()
        except Exception as exc:  # a fault of the job; BaseException (a signal) stops the caller at once
            self._value, self._error = None, exc

    def failed(self) -> bool:
        return self._error is not None

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class OrderedPool(Generic[T]):
    """Run ``job()`` calls on ``threads`` workers; hand back their results in submission order.

    ``submit(job, cost, tag)`` queues a job whose memory cost (bytes in and out) is ``cost``; when the
    queued cost would pass ``max_inflight``, the oldest results are returned to make room, through
    the list ``submit`` returns. ``drain`` returns every remaining result. A job's exception is raised
    in the caller's thread when its result is taken, in order, and never in a batch with results before it:
    ``submit`` and ``take_done`` hand those back first (their consumer may find an earlier fault in them) and
    leave the failed job at the head, for the next take to raise. Use as a context manager.
    """

    def __init__(self, threads: int, *, max_inflight: int) -> None:
        if not 0 <= threads <= MAX_THREADS:
            raise ValueError(f"worker threads must be 0 to {MAX_THREADS}, not {threads}")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kit-frame") if threads else None
        self._max_inflight = max_inflight
        self._pending: collections.deque[tuple[Future[T] | _Done[T], int]] = collections.deque()
        self._inflight = 0

    def __enter__(self) -> OrderedPool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            for future, _ in self._pending:
                if isinstance(future, Future):
                    future.cancel()
            self._pending.clear()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def submit(self, job: Callable[[], T], cost: int) -> list[T]:
        """Queue ``job``; the results (in order) that had to be taken first to stay within ``max_inflight``."""
        ready: list[T] = []
        while self._pending and self._inflight + cost > self._max_inflight:
            if ready and self._head_failed():
                break  # over budget by this one job at most: the next take raises and the caller stops
            ready.append(self._take())
        if self._executor is None:
            self._pending.append((_Done(job), cost))
        else:
            self._pending.append((self._executor.submit(job), cost))
        self._inflight += cost
        return ready

    def _head_failed(self) -> bool:
        """Whether the oldest job failed (waiting for it to finish)."""
        future = self._pending[0][0]
        if isinstance(future, _Done):
            return future.failed()
        return future.exception() is not None

    def _take(self) -> T:
        future, cost = self._pending.popleft()
        self._inflight -= cost
        return future.result()

    def take_done(self) -> list[T]:
        """Results at the head of the queue that are already finished (never waits)."""
        ready: list[T] = []
        while self._pending and (not isinstance(self._pending[0][0], Future) or self._pending[0][0].done()):
            if ready and self._head_failed():
                break
            ready.append(self._take())
        return ready

    def drain(self) -> Iterator[T]:
        while self._pending:
            yield self._take()
