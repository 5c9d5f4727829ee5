"""JSON Schema validation against the contracts in ``schemas/``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from kitbuilder.errors import FormatError, KitError


@cache
def _validator(name: str) -> Draft202012Validator:
    text = resources.files("kitbuilder.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def json_path(error: jsonschema.ValidationError) -> str:
    """``$.files[3].sha256`` style location of a validation error."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def first_error(name: str, document: Any) -> jsonschema.ValidationError | None:
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return errors[0] if errors else None


def validate(name: str, document: Any, *, what: str, error_type: type[KitError] = FormatError) -> None:
    """Raise ``error_type`` naming ``what`` and the JSON path of the first violation of schema ``name``."""
    error = first_error(name, document)
    if error is not None:
        raise error_type(f"{what}: {json_path(error)}: {error.message} (schema {name})")
