"""Run the key ranges of one backfill on several connections at once, one thread per connection.

Threads are enough: a worker spends its time waiting for the server, and psycopg
releases the GIL while it waits. The first worker to fail decides the outcome:
the others are told to stop (between batches) and their statement in flight is
cancelled, so its batch rolls back; every thread is joined before the error is
raised, so nothing runs on after the job reports. Errors that follow from that
cancel are consequences, not news, and are dropped. A signal reaches the
workers through their connections (each registered with ``signals.deferred``)
and through ``signals.received()``, which every worker checks between batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from kitbuilder.apply.db import Database

T = TypeVar("T")


def run_parallel(
    connections: Sequence[Database], items: Sequence[T], work: Callable[[Database, T], None], stop: threading.Event
) -> None:
    """``work(connection, item)`` for every item, each connection in its own thread; raises the first failure."""
    pending: queue.SimpleQueue[T] = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    failures: list[BaseException] = []
    guard = threading.Lock()

    def fail(error: BaseException, own: Database) -> None:
        with guard:
            first = not failures
            failures.append(error)
        if first:
            stop.set()
            for other in connections:
                if other is not own:
                    other.interrupt()  # cancels a statement in flight; an idle connection ignores it

    def loop(db: Database) -> None:
        try:
            while not stop.is_set():
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                work(db, item)
        except BaseException as error:  # handed to the main thread, which raises it
            fail(error, db)

    threads = [
        threading.Thread(target=loop, args=(db,), name=f"kit-backfill-{number}", daemon=True)
        for number, db in enumerate(connections)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        # A second signal stops kit at once: the workers still roll back and end before kit does.
        stop.set()
        for db in connections:
            db.interrupt()
        for thread in threads:
            thread.join()
        raise
    if failures:
        raise failures[0]
