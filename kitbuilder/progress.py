"""Progress on a terminal (bytes, MB/s, rows/s, ETA); silent when stderr is not a TTY or CI is set.

rich is imported only when a bar is actually shown, so machine runs do not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


class ByteBar:
    """A byte counter bound to one rich task; ``advance`` is the hot-path callback."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)


@contextmanager
def byte_progress(label: str, total: int | None, *, enabled: bool) -> Iterator[ByteBar | None]:
    """Yield a ByteBar, or None when progress is off."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield ByteBar(progress, progress.add_task(label, total=total))


class RowBars:
    """One bar per backfill job: rows done, rows/s, ETA."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def update(self, job: str, done: int, total: int | None) -> None:
        if job not in self._tasks:
            self._tasks[job] = self._progress.add_task(f"backfill {job}", total=total)
        self._progress.update(self._tasks[job], completed=done, total=total)


@contextmanager
def row_progress(*, enabled: bool) -> Iterator[RowBars | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RowsPerSecondColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.speed
            return Text(f"{speed:>9,.0f} rows/s" if speed else "        – rows/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowsPerSecondColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield RowBars(progress)
