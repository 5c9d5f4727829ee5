"""The ``kit`` command: parse arguments, call one operation, render its typed result, map errors to exit codes.

``app`` holds the group; each command family registers itself on it when imported below.
"""

from __future__ import annotations

from kitbuilder.cli import apply, images, keys, reading, release
from kitbuilder.cli.app import main

__all__ = ["main"]
# Imported for their commands (each module adds its own to ``main``).
_COMMAND_FAMILIES = (keys, release, reading, images, apply)
