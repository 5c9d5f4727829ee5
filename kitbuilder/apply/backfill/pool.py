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

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from kitbuilder.apply import signals
from kitbuilder.apply.db import Database, SystemicError
from kitbuilder.errors import DatabaseError

T = TypeVar("T")


def worker_connections(
    db: Database, count: int, stack: contextlib.ExitStack, *, job: str, workers: int
) -> list[Database]:
    """``count`` connections of their own for the workers of ``job``, closed by ``stack``, each cancelled by a signal.

    The server refusing one is the environment's limit, not a failed batch (nothing ran on it yet): exit 8
    naming the connection, how many the run needs and the remedy, not "stopped at its start" (the ranges may
    be half done) and never a bug.
    """
    connections = []
    for number in range(count):
        try:
            other = db.another()
        except SystemicError as exc:
            raise DatabaseError(
                f"backfill {job}: cannot open worker connection {number + 1} of {count} ({exc.reason}); "
                f"--workers {workers} needs {count + 1} connections (one per worker and the run's own): if the "
                "server's limit is reached (max_connections, or a role's or database's CONNECTION LIMIT), rerun "
                "with a lower --workers or raise the limit, else check the database server; the job resumes where "
                "it stopped"
            ) from exc
        stack.callback(other.close)
        stack.enter_context(signals.deferred(other.interrupt))
        connections.append(other)
    return connections


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
