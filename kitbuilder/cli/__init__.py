"""The ``kit`` command: parse arguments, call one operation, render its typed result, map errors to exit codes.

``app`` holds the group; each command family (keys, release, reading, images, apply) registers its commands
on it when imported, which the group does on first use of one of them (``app.COMMAND_MODULES``).
"""

from __future__ import annotations

from kitbuilder.cli.app import main

__all__ = ["main"]
