"""SBOMs: the CycloneDX 1.6 SBOM of the kit itself, and the checks of SBOMs a kit ships.

``render_kit_sbom`` writes ``sbom/kit.cdx.json``: the kit as ``metadata.component``,
one component per kit component with its files nested in it, container images
with their manifest digests, and shipped SBOMs as ``bom`` external references.
The bytes depend only on the inputs, so rebuilds stay identical.

``check_sbom`` accepts CycloneDX JSON 1.4/1.5/1.6 and SPDX 2.3 (and 2.2) JSON.
CycloneDX is checked against the official schemas that cyclonedx-python-lib
ships, with validators built by jsonschema-rs (Rust: linear, milliseconds) once per version and only
when first needed; jsonschema runs only to explain an invalid document. SPDX is
checked by spdx-tools. Layout and choices: docs/sbom.md.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from kitbuilder.core import jsonio

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

KIT_SBOM_PATH = "sbom/kit.cdx.json"
KIT_SPEC_VERSION = "1.6"
CYCLONEDX_VERSIONS = ("1.4", "1.5", "1.6")
SPDX_VERSIONS = ("SPDX-2.3", "SPDX-2.2")
# The serial number is a name-based (v5) UUID of the document's SHA-256, in kitbuilder's own namespace.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:kitbuilder:kit-sbom")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_OCI_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
# Roles whose files are executed by `kit apply`; everything else a kit carries is data to it.
_APPLICATION_ROLES = frozenset({"migration", "backfill"})
_MAX_MESSAGE = 240


class SbomError(Exception):
    """An SBOM that is not valid, or inputs from which no valid kit SBOM can be made.

    ``message`` is one line: ``<where>: <json path>: <what is wrong>``. For inputs of ``render_kit_sbom``
    that make no valid SBOM, ``json_path`` is the bom-ref of the offending file, image or component instead.
    """

    def __init__(self, where: str, json_path: str, problem: str) -> None:
        problem = " ".join(problem.split())
        if len(problem) > _MAX_MESSAGE:
            problem = problem[: _MAX_MESSAGE - 1] + "…"
        self.where = where
        self.json_path = json_path
        self.problem = problem
        self.message = f"{where}: {json_path}: {problem}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SbomFile:
    path: str
    sha256: str
    size: int
    role: str  # migration|backfill|seed|sbom|doc|image|...
    component: str


@dataclass(frozen=True)
class SbomImage:
    ref: str
    digest: str  # "sha256:<hex>" of the image manifest or index
    media_type: str
    platforms: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class KitComponent:
    id: str
    role: str
    phase: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class ShippedSbom:
    path: str
    component: str
    subject: str
    format: str  # "CycloneDX" | "SPDX"
    spec_version: str  # "1.6", "2.3", ...


@dataclass(frozen=True)
class SbomSummary:
    """What an SBOM lists: components (nested ones included, the subject not), by type, licence and supplier."""

    component_count: int
    by_type: dict[str, int]
    licenses: dict[str, int]  # per component that states one; "MIT OR Apache-2.0" counts as itself
    suppliers: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "componentCount": self.component_count,
            "byType": dict(sorted(self.by_type.items())),
            "licenses": dict(sorted(self.licenses.items())),
            "suppliers": dict(sorted(self.suppliers.items())),
        }


@dataclass(frozen=True)
class SbomInfo:
    format: str  # "CycloneDX" | "SPDX"
    spec_version: str  # "1.4".."1.6" | "2.2" | "2.3"
    subject_name: str | None  # metadata.component, or the package the SPDX document DESCRIBES
    subject_version: str | None
    summary: SbomSummary
    document_name: str | None = None  # SPDX `name`; None for CycloneDX

    def describes(self, subject: str) -> bool:
        """Whether ``subject`` (a spec's ``subject:``) names this SBOM's subject or document."""
        return subject in (self.subject_name, self.document_name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "specVersion": self.spec_version,
            "subject": {"name": self.subject_name, "version": self.subject_version},
            "documentName": self.document_name,
            "summary": self.summary.to_json(),
        }


# ---------------------------------------------------------------------------------------------------------------
# The kit's own SBOM


def render_kit_sbom(
    *,
    name: str,
    version: str,
    product: str,
    tool_version: str,
    created: str | None,
    components: Sequence[KitComponent],
    files: Sequence[SbomFile],
    images: Sequence[SbomImage],
    shipped: Sequence[ShippedSbom],
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of a kit, checked against the 1.6 schema; identical inputs, identical bytes.

    ``created`` (RFC 3339 UTC, from SOURCE_DATE_EPOCH) becomes ``metadata.timestamp``; without it there is
    none. A file at ``KIT_SBOM_PATH`` is left out (the SBOM cannot hold its own digest). Raises SbomError when
    the inputs do not make a valid SBOM (a malformed digest, a shipped SBOM that is not among the files, two
    components with one bom-ref).
    """
    where = KIT_SBOM_PATH
    kit_ref = f"kit:{name}@{version}"
    metadata: dict[str, Any] = {
        "component": {
            "bom-ref": kit_ref,
            "type": "application",
            "name": name,
            "version": version,
            "properties": [{"name": "kitbuilder:product", "value": product}],
        },
        "lifecycles": [{"phase": "build"}],
        "tools": {
            "components": [
                {
                    "bom-ref": f"tool:kitbuilder@{tool_version}",
                    "type": "application",
                    "name": "kitbuilder",
                    "version": tool_version,
                }
            ]
        },
    }
    if created is not None:
        metadata["timestamp"] = created

    groups: dict[str, dict[str, Any]] = {}
    group_roles: dict[str, str] = {}
    for kit_component in components:
        if kit_component.id in groups:
            raise SbomError(where, f"component:{kit_component.id}", "two kit components have this id")
        groups[kit_component.id] = _group(
            kit_component.id, kit_component.role, kit_component.phase, kit_component.subject
        )
        group_roles[kit_component.id] = kit_component.role
    by_path: dict[str, SbomFile] = {}
    for file in sorted(files, key=lambda f: f.path):
        if file.path == KIT_SBOM_PATH:
            continue
        if not _SHA256_HEX.fullmatch(file.sha256):
            raise SbomError(where, f"file:{file.path}", f"sha256 {file.sha256!r} is not 64 lowercase hex digits")
        if file.component not in groups:
            # Files of a component the caller did not list (e.g. the OCI layout under images/) still get a group.
            groups[file.component] = _group(file.component, file.role, None, None)
            group_roles[file.component] = file.role
        entry: dict[str, Any] = {
            "bom-ref": f"file:{file.path}",
            "type": "file",
            "name": file.path,
            "hashes": [{"alg": "SHA-256", "content": file.sha256}],
            "properties": [{"name": "kitbuilder:size", "value": str(file.size)}],
        }
        if file.role != group_roles[file.component]:
            entry["properties"].append({"name": "kitbuilder:role", "value": file.role})
        groups[file.component].setdefault("components", []).append(entry)
        by_path[file.path] = file

    containers: dict[str, dict[str, Any]] = {}
    for image in images:
        if image.ref in containers:
            raise SbomError(where, f"image:{image.ref}", "two images have this ref")
        containers[image.ref] = _container(image, where)

    repositories: dict[str, dict[str, Any]] = {}
    for ref, container in containers.items():
        repositories.setdefault(_split_ref(ref)[0], container)  # the first image of a repository
    for sbom in shipped:
        sbom_file = by_path.get(sbom.path)
        if sbom_file is None:
            raise SbomError(where, f"file:{sbom.path}", "a shipped SBOM must be one of the kit's files")
        target = (
            containers.get(sbom.subject)
            or repositories.get(sbom.subject)
            or groups.get(sbom.subject)
            or groups.get(sbom.component)
            or groups.setdefault(sbom.component, _group(sbom.component, "sbom", None, sbom.subject))
        )
        target.setdefault("externalReferences", []).append(
            {
                "type": "bom",
                "url": sbom.path,
                "comment": f"{sbom.format} {sbom.spec_version} SBOM of {sbom.subject}",
                "hashes": [{"alg": "SHA-256", "content": sbom_file.sha256}],
            }
        )
    for component in (*groups.values(), *containers.values()):
        if "externalReferences" in component:
            component["externalReferences"].sort(key=lambda r: r["url"])

    document: dict[str, Any] = {
        "$schema": f"http://cyclonedx.org/schema/bom-{KIT_SPEC_VERSION}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": KIT_SPEC_VERSION,
        "version": 1,
        "metadata": metadata,
        "components": [*groups.values(), *containers.values()],
    }
    digest = hashlib.sha256(jsonio.dump_compact(document)).hexdigest()
    document["serialNumber"] = f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, f'sha256:{digest}')}"
    _validate_cyclonedx(document, KIT_SPEC_VERSION, where)
    with _gc_paused():
        return jsonio.dump_pretty(document)


def _group(component_id: str, role: str, phase: str | None, subject: str | None) -> dict[str, Any]:
    properties = [{"name": "kitbuilder:role", "value": role}]
    if phase is not None:
        properties.append({"name": "kitbuilder:phase", "value": phase})
    if subject is not None:
        properties.append({"name": "kitbuilder:subject", "value": subject})
    return {
        "bom-ref": f"component:{component_id}",
        "type": "application" if role in _APPLICATION_ROLES else "data",
        "name": component_id,
        "properties": properties,
    }


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``registry.local/a/b:1.2`` → (``registry.local/a/b``, ``1.2``); a ``:port`` is not a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, None


def _container(image: SbomImage, where: str) -> dict[str, Any]:
    match = _OCI_DIGEST.fullmatch(image.digest)
    if match is None:
        raise SbomError(where, f"image:{image.ref}", f"digest {image.digest!r} is not sha256:<64 lowercase hex>")
    repository, tag = _split_ref(image.ref)
    first = repository.split("/", 1)[0]
    qualifiers: dict[str, str] = {}
    # Only a first segment that is a host (docker's rule) makes the repository a fetchable location.
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        qualifiers["repository_url"] = repository
    if tag is not None:
        qualifiers["tag"] = tag
    if len(image.platforms) == 1 and image.platforms[0].count("/") >= 1:
        qualifiers["arch"] = image.platforms[0].split("/")[1]
    from packageurl import PackageURL  # imported here: only builds that carry images need it

    purl = PackageURL(type="oci", name=repository.rsplit("/", 1)[-1], version=image.digest, qualifiers=qualifiers)
    properties = [
        {"name": "kitbuilder:ref", "value": image.ref},
        {"name": "kitbuilder:mediaType", "value": image.media_type},
        *({"name": "kitbuilder:platform", "value": platform} for platform in image.platforms),
        {"name": "kitbuilder:size", "value": str(image.size)},
    ]
    return {
        "bom-ref": f"image:{image.ref}",
        "type": "container",
        "name": repository,
        "version": tag if tag is not None else image.digest,
        "hashes": [{"alg": "SHA-256", "content": match.group(1)}],
        "purl": purl.to_string(),
        "properties": properties,
    }


# ---------------------------------------------------------------------------------------------------------------
# Shipped SBOMs


def check_sbom(data: bytes, where: str) -> SbomInfo:
    """Detect CycloneDX JSON 1.4–1.6 or SPDX 2.3/2.2 JSON, validate it and summarise it.

    Raises SbomError naming ``where``, the JSON path of the first problem and what is wrong: not JSON,
    another format or version, a schema violation, a duplicate bom-ref, an SPDX document spdx-tools refuses.
    """
    document = _load(data, where)
    if "bomFormat" in document:
        version = _cyclonedx_version(document, where)
        _validate_cyclonedx(document, version, where)
        component = document.get("metadata", {}).get("component", {})
        return SbomInfo(
            format="CycloneDX",
            spec_version=version,
            subject_name=component.get("name"),
            subject_version=component.get("version"),
            summary=summarize_sbom(document, where=where),
        )
    if "spdxVersion" in document:
        spdx_version = document["spdxVersion"]
        if spdx_version not in SPDX_VERSIONS:
            raise SbomError(
                where, "$.spdxVersion", f"{spdx_version!r} is not supported; ship SPDX-2.3 (or SPDX-2.2) JSON"
            )
        _validate_spdx(document, where)
        subject = _spdx_subject(document)
        return SbomInfo(
            format="SPDX",
            spec_version=spdx_version.removeprefix("SPDX-"),
            subject_name=subject.get("name", subject.get("fileName")),
            subject_version=subject.get("versionInfo"),
            summary=summarize_sbom(document, where=where),
            document_name=document["name"],
        )
    if "spdx.org/rdf/3" in json.dumps(document.get("@context", "")):
        raise SbomError(where, "$", "SPDX 3 JSON-LD is not supported; ship SPDX-2.3 JSON or CycloneDX JSON 1.4-1.6")
    raise SbomError(
        where, "$", "neither CycloneDX JSON (no bomFormat) nor SPDX JSON (no spdxVersion); ship one of the two"
    )


def _load(data: bytes, where: str) -> dict[str, Any]:
    """Strict JSON: no duplicate keys or NaN (two parsers could read them differently); floats are allowed."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = value
        return result

    def constant(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SbomError(where, "$", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    start = text.lstrip()[:200]
    if start.startswith("<"):
        raise SbomError(where, "$", "an XML SBOM is not supported; ship CycloneDX JSON 1.4-1.6 or SPDX-2.3 JSON")
    if start.startswith("SPDXVersion:"):
        raise SbomError(where, "$", "SPDX tag-value is not supported; ship SPDX-2.3 JSON or CycloneDX JSON")
    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:
        raise SbomError(where, "$", "nested too deeply to be an SBOM") from None
    except ValueError as exc:
        raise SbomError(where, "$", f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SbomError(where, "$", f"expected a JSON object (a CycloneDX or SPDX document), got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _cyclonedx_version(document: dict[str, Any], where: str) -> str:
    if document["bomFormat"] != "CycloneDX":
        raise SbomError(where, "$.bomFormat", f"{document['bomFormat']!r} is not 'CycloneDX'")
    version = document.get("specVersion")
    if not isinstance(version, str) or version not in CYCLONEDX_VERSIONS:
        what = "is missing" if version is None else f"{version!r} is not supported"
        raise SbomError(where, "$.specVersion", f"{what}; ship CycloneDX JSON {', '.join(CYCLONEDX_VERSIONS)}")
    return version


def json_path(parts: Sequence[str | int]) -> str:
    """``$.components[3].hashes[0].content`` from a sequence of keys and indexes."""
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


# ---------------------------------------------------------------------------------------------------------------
# CycloneDX validation

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
_REFERENCED = ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json")


@cache
def _schema_file(name: str) -> dict[str, Any]:
    try:
        text = resources.files("cyclonedx.schema._res").joinpath(name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(f"the CycloneDX schema {name} from cyclonedx-python-lib is not installed") from exc
    document: dict[str, Any] = json.loads(text)
    return document


def _referenced(uri: str) -> dict[str, Any]:
    # The bom schemas refer to these two by relative URI; never fetch anything over the network.
    name = uri.rsplit("/", 1)[-1]
    if uri.startswith("http://cyclonedx.org/schema/") and name in _REFERENCED:
        return _schema_file(name)
    raise RuntimeError(f"the CycloneDX schema refers to {uri}, which kit does not resolve")


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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Validation allocates millions of short-lived, acyclic tuples and sets; collecting during it only costs.

    (About half of the validation time of a 50,000-file SBOM.)
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validate_cyclonedx(document: dict[str, Any], version: str, where: str) -> None:
    try:
        first = next(iter(_fast_validator(version).iter_errors(document)), None)
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

    error = best_match(_explaining_validator(version).iter_errors(document))
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
        message = str(first.message).splitlines()[0][:_MAX_MESSAGE]
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


# ---------------------------------------------------------------------------------------------------------------
# SPDX validation

# Required fields (and their JSON type) of SPDX 2.3 JSON, checked first so a missing one is named by its path
# instead of by spdx-tools' constructor message.
_SPDX_REQUIRED: dict[str, dict[str, type]] = {
    "": {"SPDXID": str, "name": str, "dataLicense": str, "documentNamespace": str, "creationInfo": dict},
    "creationInfo": {"created": str, "creators": list},
    "packages": {"SPDXID": str, "name": str, "downloadLocation": str},
    "files": {"SPDXID": str, "fileName": str, "checksums": list},
    "snippets": {"SPDXID": str, "snippetFromFile": str, "ranges": list},
    "relationships": {"spdxElementId": str, "relationshipType": str, "relatedSpdxElement": str},
}
_SPDX_LISTS = ("packages", "files", "snippets", "relationships", "annotations", "hasExtractedLicensingInfos")
_JSON_TYPES: dict[type, str] = {str: "a string", dict: "an object", list: "an array"}


def _require(element: Any, fields: dict[str, type], path: list[str | int], where: str) -> None:
    if not isinstance(element, dict):
        raise SbomError(where, json_path(path), f"expected an object, got {_kind(element)}")
    for key, wanted in fields.items():
        if key not in element:
            raise SbomError(where, json_path(path), f"required field {key} is missing")
        if not isinstance(element[key], wanted):
            problem = f"expected {_JSON_TYPES[wanted]}, got {_kind(element[key])}"
            raise SbomError(where, json_path([*path, key]), problem)


def _validate_spdx(document: dict[str, Any], where: str) -> None:
    _require(document, _SPDX_REQUIRED[""], [], where)
    _require(document["creationInfo"], _SPDX_REQUIRED["creationInfo"], ["creationInfo"], where)
    described = document.get("documentDescribes", [])
    if not isinstance(described, list) or not all(isinstance(spdx_id, str) for spdx_id in described):
        raise SbomError(where, "$.documentDescribes", "expected an array of SPDX ids (strings)")
    for key in _SPDX_LISTS:
        elements = document.get(key, [])
        if not isinstance(elements, list):
            raise SbomError(where, json_path([key]), f"expected an array, got {_kind(elements)}")
        for index, element in enumerate(elements):
            _require(element, _SPDX_REQUIRED.get(key, {}), [key, index], where)

    # spdx-tools takes about 0.15 s to import; only documents that get this far pay for it.
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import (
        JsonLikeDictParser,
    )
    from spdx_tools.spdx.validation.document_validator import (
        validate_full_spdx_document,
    )

    try:
        parsed = JsonLikeDictParser().parse(document)  # type: ignore[no-untyped-call]
    except SPDXParsingError as exc:
        raise _spdx_parse_error(document, where, list(exc.messages)) from None
    except _SPDX_TOOLS_CRASHES as exc:
        raise _spdx_parse_error(document, where, [_crash(exc)]) from None
    messages = validate_full_spdx_document(parsed)
    if messages:
        first = messages[0]
        raise SbomError(where, _spdx_location(document, first.context), first.validation_message)


# spdx-tools assumes the JSON types of optional fields (a checksum that is a string raises AttributeError). On a
# document from outside, that is the document's fault, so these become SbomErrors naming the element.
_SPDX_TOOLS_CRASHES = (AttributeError, TypeError, KeyError, ValueError)


def _crash(exc: Exception) -> str:
    return f"spdx-tools cannot read it; a field has the wrong JSON type ({type(exc).__name__}: {exc})"


def _innermost(message: str) -> str:
    """spdx-tools wraps messages as ``Error while parsing X: ['...']``; the innermost one says what is wrong."""
    wrapped = re.compile(r"Error while (?:parsing|constructing) [\w ]+: \[(['\"])(.*)\1\]", re.DOTALL)
    while (match := wrapped.fullmatch(message)) is not None:
        message = match.group(2).replace("\\'", "'")
    return message


def _spdx_parse_error(document: dict[str, Any], where: str, messages: list[str]) -> SbomError:
    # spdx-tools does not say which element failed; parse them one by one to find it (error path only).
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.annotation_parser import AnnotationParser
    from spdx_tools.spdx.parser.jsonlikedict.file_parser import FileParser
    from spdx_tools.spdx.parser.jsonlikedict.package_parser import PackageParser
    from spdx_tools.spdx.parser.jsonlikedict.relationship_parser import RelationshipParser
    from spdx_tools.spdx.parser.jsonlikedict.snippet_parser import SnippetParser

    parsers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "packages": PackageParser().parse_package,  # type: ignore[no-untyped-call]
        "files": FileParser().parse_file,  # type: ignore[no-untyped-call]
        "snippets": SnippetParser().parse_snippet,  # type: ignore[no-untyped-call]
        "relationships": RelationshipParser().parse_relationship,  # type: ignore[no-untyped-call]
        "annotations": AnnotationParser().parse_annotation,  # type: ignore[no-untyped-call]
    }
    for key, parse in parsers.items():
        for index, element in enumerate(document.get(key, [])):
            try:
                parse(element)
            except SPDXParsingError as exc:
                return SbomError(where, json_path([key, index]), _innermost(str(exc.messages[0])))
            except _SPDX_TOOLS_CRASHES as exc:
                return SbomError(where, json_path([key, index]), _crash(exc))
    return SbomError(where, "$", _innermost(messages[0]) if messages else "spdx-tools cannot parse it")


def _spdx_location(document: dict[str, Any], context: Any) -> str:
    """The JSON path of the element a spdx-tools validation message is about, as precisely as it says."""
    elements: dict[str, list[str | int]] = {document.get("SPDXID", ""): []}
    for key in ("packages", "files", "snippets"):
        for index, element in enumerate(document.get(key, [])):
            elements.setdefault(element["SPDXID"], [key, index])
    kind = context.element_type.name if context.element_type is not None else ""
    if kind in ("PACKAGE", "FILE", "SNIPPET", "DOCUMENT") and context.spdx_id in elements:
        return json_path(elements[context.spdx_id])
    parent = elements.get(context.parent_id) if context.parent_id is not None else None
    if kind == "CHECKSUM" and parent is not None:
        owner = document[str(parent[0])][int(parent[1])] if parent else document
        for index, checksum in enumerate(owner.get("checksums", [])):
            if checksum.get("checksumValue") == getattr(context.full_element, "value", None):
                return json_path([*parent, "checksums", index])
        return json_path([*parent, "checksums"])
    if kind == "EXTERNAL_PACKAGE_REF" and parent is not None:
        return json_path([*parent, "externalRefs"])
    if kind == "PACKAGE_VERIFICATION_CODE" and parent is not None:
        return json_path([*parent, "packageVerificationCode"])
    if kind == "RELATIONSHIP":
        relationship = context.full_element
        for index, entry in enumerate(document.get("relationships", [])):
            if (entry.get("spdxElementId"), entry.get("relatedSpdxElement")) == (
                getattr(relationship, "spdx_element_id", None),
                str(getattr(relationship, "related_spdx_element_id", None)),
            ):
                return json_path(["relationships", index])
        return "$.relationships"
    if kind == "CREATION_INFO" or kind == "ACTOR":
        return "$.creationInfo"
    if kind in ("ANNOTATION", "EXTRACTED_LICENSING_INFO", "EXTERNAL_DOCUMENT_REF"):
        keys = {"ANNOTATION": "annotations", "EXTRACTED_LICENSING_INFO": "hasExtractedLicensingInfos"}
        return json_path([keys.get(kind, "externalDocumentRefs")])
    if parent is not None:
        return json_path(parent)
    return "$"


def _spdx_subject(document: dict[str, Any]) -> dict[str, Any]:
    """The element the document DESCRIBES (first one), or {} when it names none."""
    described = list(document.get("documentDescribes", []))
    own = document["SPDXID"]
    for relationship in document.get("relationships", []):
        kind = relationship["relationshipType"]
        if kind == "DESCRIBES" and relationship["spdxElementId"] == own:
            described.append(relationship["relatedSpdxElement"])
        elif kind == "DESCRIBED_BY" and relationship["relatedSpdxElement"] == own:
            described.append(relationship["spdxElementId"])
    elements = {e.get("SPDXID"): e for key in ("packages", "files") for e in document.get(key, [])}
    for spdx_id in described:
        if spdx_id in elements:
            element: dict[str, Any] = elements[spdx_id]
            return element
    return {}


# ---------------------------------------------------------------------------------------------------------------
# Summaries


def summarize_sbom(document: dict[str, Any], *, where: str = "SBOM") -> SbomSummary:
    """Count what a (parsed, validated) CycloneDX or SPDX document lists; SbomError if it is neither."""
    types: Counter[str] = Counter()
    licenses: Counter[str] = Counter()
    suppliers: Counter[str] = Counter()
    if "bomFormat" in document:
        for component in _cyclonedx_components(document):
            types[str(component.get("type"))] += 1
            licenses.update(_cyclonedx_licenses(component))
            supplier = component.get("supplier")
            if isinstance(supplier, dict) and isinstance(supplier.get("name"), str):
                suppliers[supplier["name"]] += 1
    elif "spdxVersion" in document:
        packages = [p for p in document.get("packages", []) if isinstance(p, dict)]
        files = [f for f in document.get("files", []) if isinstance(f, dict)]
        for package in packages:
            purpose = package.get("primaryPackagePurpose")
            types[purpose.lower() if isinstance(purpose, str) else "package"] += 1
            declared = _spdx_license(package.get("licenseDeclared"))
            license_ = declared if declared is not None else _spdx_license(package.get("licenseConcluded"))
            if license_ is not None:
                licenses[license_] += 1
            supplier = _spdx_actor(package.get("supplier"))
            if supplier is not None:
                suppliers[supplier] += 1
        for file in files:
            types["file"] += 1
            license_ = _spdx_license(file.get("licenseConcluded"))
            if license_ is not None:
                licenses[license_] += 1
    else:
        raise SbomError(where, "$", "neither CycloneDX JSON (no bomFormat) nor SPDX JSON (no spdxVersion)")
    return SbomSummary(
        component_count=sum(types.values()),
        by_type=dict(sorted(types.items())),
        licenses=dict(sorted(licenses.items())),
        suppliers=dict(sorted(suppliers.items())),
    )


def listed_files(document: dict[str, Any]) -> dict[str, str]:
    """Kit path → SHA-256 of every file a (validated) kit SBOM lists, to compare with the signed manifest."""
    return {
        component["name"]: hashes[0]["content"]
        for component in _cyclonedx_components(document)
        if component.get("type") == "file"
        and str(component.get("bom-ref", "")).startswith("file:")
        and isinstance(hashes := component.get("hashes"), list)
        and hashes
        and hashes[0].get("alg") == "SHA-256"
    }


def _cyclonedx_components(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every component, nested ones included, in document order; not metadata.component or tools."""
    stack: list[Any] = list(reversed(document.get("components", [])))
    while stack:
        component = stack.pop()
        if isinstance(component, dict):
            yield component
            nested = component.get("components", [])
            if isinstance(nested, list):
                stack.extend(reversed(nested))


def _cyclonedx_licenses(component: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    entries = component.get("licenses", [])
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("expression"), str):
            found.add(entry["expression"])
        license_ = entry.get("license")
        if isinstance(license_, dict):
            value = license_.get("id", license_.get("name"))
            if isinstance(value, str):
                found.add(value)
    return found


def _spdx_license(value: Any) -> str | None:
    # NOASSERTION says nothing about the licence; NONE is a statement ("no licence") and is counted.
    if isinstance(value, str) and value and value != "NOASSERTION":
        return value
    return None


def _spdx_actor(value: Any) -> str | None:
    """``Organization: Example Inc. (ops@example.com)`` → ``Example Inc.``."""
    if not isinstance(value, str) or value == "NOASSERTION":
        return None
    name = value.split(":", 1)[1] if value.startswith(("Organization:", "Person:", "Tool:")) else value
    name = re.sub(r"\s*\([^()]*\)\s*$", "", name).strip()
    return name or None
