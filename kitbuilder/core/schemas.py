"""JSON Schema validation against the contracts in ``schemas/``.

The happy path runs validators compiled by fastjsonschema (a manifest of 10,000
files validates in milliseconds); only when a document is invalid is the
slower, more precise jsonschema run, to name the JSON path of the first error.
Schemas are draft-07 so both libraries read them the same way.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema

from kitbuilder.errors import FormatError, KitError


@cache
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("kitbuilder.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _fast(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(_schema(name))


class SchemaError:
    """The first violation found: where (JSON path) and what."""

    def __init__(self, path: tuple[Any, ...], message: str, validator: str) -> None:
        self.absolute_path = path
        self.message = message
        self.validator = validator


def json_path(error: SchemaError) -> str:
    """``$.files[3].sha256`` style location of a validation error."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


MAX_EXPLAINED_ERRORS = 1000


def first_error(name: str, document: Any) -> SchemaError | None:
    try:
        _fast(name)(document)
        return None
    except fastjsonschema.JsonSchemaValueException as fast_error:
        fallback = SchemaError((), str(fast_error.message), "unknown")
    import jsonschema  # slow to import; only needed to explain an invalid document

    validator = jsonschema.Draft7Validator(_schema(name))
    # One error is reported: the earliest path among the first few. Every error of a document wrong a
    # million times over (each holding its path and schema context) would cost gigabytes to collect.
    found = itertools.islice(validator.iter_errors(document), MAX_EXPLAINED_ERRORS)
    errors = sorted(found, key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return fallback
    error = errors[0]
    return SchemaError(tuple(error.absolute_path), error.message, str(error.validator))


def validate(name: str, document: Any, *, what: str, error_type: type[KitError] = FormatError) -> None:
    """Raise ``error_type`` naming ``what`` and the JSON path of the first violation of schema ``name``."""
    error = first_error(name, document)
    if error is not None:
        raise error_type(f"{what}: {json_path(error)}: {error.message} (schema {name})")
