"""Hashing on a second core while the first decompresses.

SHA-256 (about 1.6 GB/s here) is as costly as zstd decompression, and both
release the GIL, so the verifier hands every digest update to one worker
thread. Updates run in submission order; memory stays bounded because the
queue is; ``sync`` waits until every queued update has been applied, which
callers do before reading a digest.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

_BATCH = 256 * 1024
_MAX_QUEUED = 16 << 20


class HashWorker:
    """One background thread applying ``digest.update(data)`` calls in order."""

    def __init__(self, depth: int = 32, max_bytes: int = _MAX_QUEUED) -> None:
        self._queue: queue.Queue[tuple[Any, Any]] = queue.Queue(maxsize=depth)
        # Bytes queued, bounded too: ``depth`` pieces of a 4 MiB frame would otherwise hold 128 MiB.
        self._max_bytes = max_bytes
        self._queued = 0
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kit-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            digest, data = self._queue.get()
            if digest is None:
                return
            if isinstance(data, threading.Event):
                data.set()
                continue
            try:
                digest.update(data)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by sync()
                self._error = exc
            with self._room:
                self._queued -= len(data)
                self._room.notify()

    def update(self, digest: Any, data: bytes) -> None:
        with self._room:
            while self._queued and self._queued + len(data) > self._max_bytes:
                self._room.wait()
            self._queued += len(data)
        self._queue.put((digest, data))

    def sync(self) -> None:
        done = threading.Event()
        self._queue.put((True, done))
        done.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put((None, None))
        self._thread.join()


class QueuedDigest:
    """A digest fed through a HashWorker, batching small updates; call ``hexdigest`` after ``sync``."""

    def __init__(self, worker: HashWorker, digest: Any) -> None:
        self._worker = worker
        self._digest = digest
        self._pending: list[bytes] = []
        self._pending_size = 0

    def update(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._worker.update(self._digest, b"".join(self._pending) if len(self._pending) > 1 else self._pending[0])
            self._pending = []
            self._pending_size = 0

    def hexdigest(self) -> str:
        """Only valid once ``flush`` and the worker's ``sync`` have run."""
        return str(self._digest.hexdigest())
