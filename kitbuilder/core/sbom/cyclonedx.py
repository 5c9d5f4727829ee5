"""CycloneDX JSON 1.4-1.6 against the official schemas that cyclonedx-python-lib ships, plus unique bom-refs.

Two validators are built per version, each once and only when first needed: jsonschema-rs (Rust: builds in
milliseconds, linear to run) decides, and jsonschema runs only on a document already refused, to say where
and what is wrong in words a person can act on. Nothing here is imported until a document is validated.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from kitbuilder.core.sbom.model import MAX_MESSAGE, SbomError, json_path
from kitbuilder.core.schemas import MAX_EXPLAINED_ERRORS

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

_DATE_TIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
# RFC 3987 excludes these from any IRI reference; a cheap check that still catches pasted text and paths.
_IRI_REFERENCE = re.compile(r"[^\s<>\"{}|\\^`\x00-\x1f\x7f]*")
_IDN_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _matches(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda value: not isinstance(value, str) or pattern.fullmatch(value) is not None


# Both validators get the same format checks, so the explaining one finds what the fast one refused.
_FORMATS = {
    "date-time": _matches(_DATE_TIME),
    "iri-reference": _matches(_IRI_REFERENCE),
    "idn-email": _matches(_IDN_EMAIL),
}
# The bom schemas refer to these two by URI; they resolve to the installed copies, never over the network.
_REFERENCED = ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json")


@cache
def _schema_file(name: str) -> dict[str, Any]:
    try:
        text = resources.files("cyclonedx.schema._res").joinpath(name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(f"the CycloneDX schema {name} from cyclonedx-python-lib is not installed") from exc
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _fast_validator(version: str) -> Any:
    """The official CycloneDX schema, compiled by jsonschema-rs: milliseconds to build, linear to run.

    (fastjsonschema generated 6.9 MB of Python for the 1.6 schema: 1 s and 300 MiB per process.)
    References resolve to the schemas shipped with cyclonedx-python-lib, never over the network.
    """
    import jsonschema_rs

    registry = jsonschema_rs.Registry(
        [(f"http://cyclonedx.org/schema/{name}", _schema_file(name)) for name in _REFERENCED]
    )
    return jsonschema_rs.Draft7Validator(
        _schema_file(f"bom-{version}.SNAPSHOT.schema.json"),
        registry=registry,
        formats=_FORMATS,
        validate_formats=True,
    )


def _without_unique_items(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_unique_items(value) for key, value in schema.items() if key != "uniqueItems"}
    if isinstance(schema, list):
        return [_without_unique_items(value) for value in schema]
    return schema


@cache
def _explaining_validator(version: str) -> Validator:
    # jsonschema's uniqueItems compares items pairwise (quadratic); that keyword is left to the fast validator.
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    resources_: list[tuple[str, Resource[Any]]] = [
        (f"http://cyclonedx.org/schema/{name}", DRAFT7.create_resource(_schema_file(name))) for name in _REFERENCED
    ]
    checker = jsonschema.FormatChecker(formats=())
    for fmt, check in _FORMATS.items():
        checker.checks(fmt)(check)
    return jsonschema.Draft7Validator(
        _without_unique_items(_schema_file(f"bom-{version}.SNAPSHOT.schema.json")),
        registry=Registry().with_resources(resources_),
        format_checker=checker,
    )


def validate_cyclonedx(document: dict[str, Any], version: str, where: str) -> None:
    """Check a parsed document against the CycloneDX ``version`` schema and for bom-refs used twice.

    Raises SbomError naming ``where``, the JSON path of the clearest problem and what is wrong.
    """
    import jsonschema_rs

    # validate() stops at the first error; iter_errors() collects every one before yielding the first,
    # which took 2 GiB and 23 s for an SBOM of a million `{}` entries.
    first: jsonschema_rs.ValidationError | None = None
    try:
        _fast_validator(version).validate(document)
    except jsonschema_rs.ValidationError as exc:
        first = exc
    except ValueError:  # jsonschema-rs refuses values nested more than about 255 levels ("Recursion limit reached")
        raise SbomError(where, "$", "nested too deeply to be an SBOM") from None
    if first is not None:
        try:
            error = _explain(document, version, where, first)
        except RecursionError:
            error = SbomError(where, "$", "nested too deeply to be an SBOM")
        raise error from None
    _check_bom_refs(document, where)


def _explain(document: dict[str, Any], version: str, where: str, first: Any) -> SbomError:
    """The clearest of the errors (jsonschema's best_match), else the fast validator's first one."""
    from jsonschema.exceptions import best_match

    # Chosen among the first errors only: an SBOM of millions of wrong entries has as many errors, and
    # collecting them all (each with its path and schema context) took gigabytes for 8 MiB of `{},`.
    error = best_match(itertools.islice(_explaining_validator(version).iter_errors(document), MAX_EXPLAINED_ERRORS))
    if error is not None:
        message = error.message
        if error.validator == "enum" and len(error.validator_value) > 20:
            # The SPDX licence list has 700 ids; naming them all would hide the message.
            message = f"{error.instance!r} is not one of the {len(error.validator_value)} values the schema allows"
        return SbomError(where, json_path(list(error.absolute_path)), message)
    # Only uniqueItems is left to the fast validator alone (the explaining one drops it: quadratic there).
    if type(first.kind).__name__ == "UniqueItems":
        message = "must contain unique items (two entries are identical)"
    else:
        message = str(first.message).splitlines()[0][:MAX_MESSAGE]
    return SbomError(where, json_path(list(first.instance_path)), message)


def _check_bom_refs(document: dict[str, Any], where: str) -> None:
    """Every bom-ref in a BOM names one thing (the schema cannot say so); linear in the document's size."""
    seen: set[str] = set()
    for value in _bom_refs(document):
        if value in seen:
            first, second = [path for path, ref in _bom_ref_paths(document) if ref == value][:2]
            raise SbomError(where, json_path(second), f"bom-ref {value!r} is already used at {json_path(first[:-1])}")
        seen.add(value)


def _bom_refs(document: dict[str, Any]) -> Iterator[str]:
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("bom-ref")
            if isinstance(ref, str):
                yield ref
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))


def _bom_ref_paths(document: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """The same walk as ``_bom_refs``, with paths: only run once a duplicate is known."""
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            ref = node.get("bom-ref")
            if isinstance(ref, str):
                yield [*path, "bom-ref"], ref
            stack.extend(reversed([(value, [*path, key]) for key, value in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(value, [*path, index]) for index, value in enumerate(node)]))
