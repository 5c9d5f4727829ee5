"""The ``kit`` command group: signals, logging, and the net for output errors outside a command's operation."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import signal
from typing import Any

import click

from kitbuilder import __version__
from kitbuilder.cli.errors import environment_error, fail, stopped_by


def _terminated(signal_number: int, frame: object) -> None:
    # SIGTERM's default ends the process on the spot: no line on stderr and temporary files left behind.
    # Raised as an error instead, it unwinds like Ctrl-C: each open output discards its temporary file.
    # (`kit apply` installs its own handler for the run, which stops at a safe point, and restores this one.)
    raise stopped_by(signal_number)


# Which module of kitbuilder.cli defines each top-level command. A command's module (and the operations it
# imports) is loaded only when that command runs, so `kit inspect` does not pay for importing `kit apply`'s
# database and YAML stack: start-up is part of every command's time (tests/unit/cli/test_app.py checks
# this table against the commands the modules register).
COMMAND_MODULES: dict[str, str] = {
    "keygen": "keys",
    "trust": "keys",
    "build": "release",
    "patch": "release",
    "verify": "reading",
    "inspect": "reading",
    "sbom": "reading",
    "diff": "reading",
    "images": "images",
    "apply": "apply",
    "rollback": "apply",
    "status": "apply",
    "repair": "apply",
}


class KitGroup(click.Group):
    """The ``kit`` group: an OSError outside ``exit_on_error`` (a report to a full disk) is one line, exit 12.

    Commands are registered by their modules when those are imported, on first use (``COMMAND_MODULES``).
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"kitbuilder.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            return super().invoke(ctx)
        except OSError as exc:
            # EPIPE: whoever read stdout went away (`kit … | head`); click ends quietly, as other tools do.
            if exc.errno == errno.EPIPE or os.environ.get("KIT_DEBUG"):
                raise
            fail(environment_error(exc, unnamed="standard output"), as_json=False)
        finally:
            signal.signal(signal.SIGTERM, previous)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kit")
def main() -> None:
    """Build, sign, verify, inspect, apply and patch offline kits. Exit codes: docs/exit-codes.md."""
    # Drivers log their own warnings (psycopg reports a dropped pipeline); the error kit raises
    # already says what happened, in one line, so library log records are not printed.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    logging.getLogger("psycopg").propagate = False
