"""Output shared by every command: the --json document and one-line messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from kitbuilder.core import text


def emit_json(document: Mapping[str, Any]) -> None:
    """Print one JSON document on stdout: indented, keys sorted (docs/json-output.md)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def one_line(message: str) -> str:
    """A message as one printable line: text from a kit (key ids, hints, image names) cannot add lines or escapes."""
    return text.printable(message)


def indent_sql(sql: str) -> str:
    """SQL from a kit, each line shown printable (control and format characters escaped) under a margin."""
    return "\n".join(f"      | {text.printable(line)}" for line in sql.strip().splitlines())
