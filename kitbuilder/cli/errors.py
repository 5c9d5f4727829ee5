"""The one place where errors become a line on stderr, a --json failure document and an exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from kitbuilder.cli.render import emit_json, one_line
from kitbuilder.errors import EXIT_CODES, FailedRunError, HostIOError, InterruptedRun, KitError


def fail(error: KitError, *, as_json: bool) -> NoReturn:
    """Report ``error`` (with --json: the failure document, beside a failed run's partial report) and exit."""
    # Reporting must not fail in turn (stdout on the disk that just filled up): the exit code still says it all.
    with contextlib.suppress(OSError):
        if as_json:
            document: dict[str, Any] = dict(error.report) if isinstance(error, FailedRunError) else {}
            failure = {"kind": error.kind, "exitCode": error.exit_code, "message": one_line(str(error))}
            document.update({"ok": False, "error": failure})
            emit_json(document)
    with contextlib.suppress(OSError):
        click.echo(f"kit: {error.kind} error: {one_line(str(error))}", err=True)
    sys.exit(error.exit_code)


def environment_error(exc: OSError, *, unnamed: str = "(unknown path)") -> HostIOError:
    """An OSError no site turned into a KitError: the host refused something (exit 12), never a bug (70).

    Each writing site names its own path and action (kitbuilder.atomic); this is the net under them.
    """
    from kitbuilder.atomic import action_for  # only on this path: every command imports this module

    where = exc.filename if exc.filename is not None else unnamed
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return HostIOError.from_os_error(exc, path=where, action=action_for(exc))


def stopped_by(signal_number: int) -> InterruptedRun:
    """SIGINT or SIGTERM outside `kit apply`'s safe points: the exception unwound every open output, so each
    discarded its temporary file (exit 130 or 143, the same line for both signals)."""
    name = signal.Signals(signal_number).name
    return InterruptedRun(
        f"stopped by {name}; nothing was left under a final name, rerun the same command", signal_number=signal_number
    )


@contextlib.contextmanager
def exit_on_error(as_json: bool) -> Iterator[None]:
    """Run a command's operation: library errors become messages and exit codes, bugs exit 70 in one line."""
    try:
        yield
    except KitError as error:
        fail(error, as_json=as_json)
    except KeyboardInterrupt:
        fail(stopped_by(signal.SIGINT), as_json=as_json)
    except Exception as exc:
        if os.environ.get("KIT_DEBUG"):
            raise
        if isinstance(exc, OSError):
            fail(environment_error(exc), as_json=as_json)
        # A bug, not a user error: say so in one line; KIT_DEBUG=1 shows the traceback.
        message = one_line(f"{type(exc).__name__}: {exc} (rerun with KIT_DEBUG=1 and report it)")
        if as_json:
            failure = {"kind": "internal", "exitCode": EXIT_CODES["internal"], "message": message}
            emit_json({"ok": False, "error": failure})
        click.echo(f"kit: internal error: {message}", err=True)
        sys.exit(EXIT_CODES["internal"])
