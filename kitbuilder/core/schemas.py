"""JSON Schema validation against the contracts in ``schemas/``.

The happy path runs validators compiled by fastjsonschema (a manifest of 10,000
files validates in milliseconds); only when a document is invalid is the
slower, more precise jsonschema run, to name the JSON path of the first error.
Schemas are draft-07 so both libraries read them the same way.

The documents that grow with a kit (the manifest and the archive index, one entry
per file) are first offered to jsonschema-rs, which compiles a schema in a
millisecond (fastjsonschema spends ~0.1 s generating Python for each) and checks
a list of 10,000 files several times faster. It only ever *accepts* there: a
document it refuses is judged again by fastjsonschema, so the verdict stays the
one the Python validators give (tests/property/test_schema_fast_path.py feeds
both near misses of real documents). These documents come from the strict kit
parser (integers only, no lone surrogates), where the two libraries agree.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import fastjsonschema

from kitbuilder.errors import FormatError, KitError

if TYPE_CHECKING:
    import jsonschema_rs


@cache
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("kitbuilder.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _fast(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(_schema(name))


# Documents with one entry per file of a kit, parsed by ``jsonio.load_object`` (see the module docstring).
LARGE_DOCUMENT_SCHEMAS = frozenset({"manifest", "manifest-v2", "index", "index-v2"})


@cache
def _rs(name: str) -> jsonschema_rs.Draft7Validator:
    import jsonschema_rs  # imported on first use: every kit command imports this module

    return jsonschema_rs.Draft7Validator(_schema(name))


def _accepted_fast(name: str, document: Any) -> bool:
    """Whether jsonschema-rs accepts ``document``; False means "ask the Python validators", never "invalid"."""
    if name not in LARGE_DOCUMENT_SCHEMAS:
        return False
    try:
        return _rs(name).is_valid(document)
    except (ValueError, TypeError, OverflowError):
        # A value it cannot convert (a lone surrogate, an integer beyond 64 bits): the Python path decides.
        return False


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
    if _accepted_fast(name, document):
        return None
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
