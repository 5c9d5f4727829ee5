"""The values of the SBOM package: what a kit SBOM is made from, what a check reports, and SbomError.

Every other module of the package raises ``SbomError`` and builds its JSON paths with ``json_path``, so both
live here, beside the frozen dataclasses, where nothing imports a schema or validator library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kitbuilder.core import fields

KIT_SBOM_PATH = "sbom/kit.cdx.json"
KIT_SPEC_VERSION = "1.6"
CYCLONEDX_VERSIONS = ("1.4", "1.5", "1.6")
SPDX_VERSIONS = ("SPDX-2.3", "SPDX-2.2")
SBOM_FORMATS = ("CycloneDX", "SPDX")
# The longest problem an SbomError spells out: enough for any schema message, short enough for one line.
MAX_MESSAGE = 240


class SbomError(Exception):
    """An SBOM that is not valid, or inputs from which no valid kit SBOM can be made.

    ``message`` is one line: ``<where>: <json path>: <what is wrong>``. For inputs of ``render_kit_sbom``
    that make no valid SBOM, ``json_path`` is the bom-ref of the offending file, image or component instead.
    """

    def __init__(self, where: str, json_path: str, problem: str) -> None:
        problem = " ".join(problem.split())
        if len(problem) > MAX_MESSAGE:
            problem = problem[: MAX_MESSAGE - 1] + "…"
        self.where = where
        self.json_path = json_path
        self.problem = problem
        self.message = f"{where}: {json_path}: {problem}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def json_path(parts: Sequence[str | int]) -> str:
    """``$.components[3].hashes[0].content`` from a sequence of keys and indexes."""
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def json_kind(value: object) -> str:
    """What a JSON value is, as an error message names it: ``an object``, ``null``, ``a number``..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


@dataclass(frozen=True)
class SbomImage:
    ref: str
    digest: str  # "sha256:<hex>" of the image manifest or index
    media_type: str
    platforms: tuple[str, ...]
    size: int


# The inventory digest of no lines at all: a component whose source holds no file.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Inventory:
    """A component's files as ``SHA256SUMS`` lists them: how many, their total size, the SHA-256 of their lines
    (``inventory.component_inventories`` computes it; docs/sbom.md defines it)."""

    files: int = 0
    bytes: int = 0
    sha256: str = EMPTY_SHA256


@dataclass(frozen=True)
class KitComponent:
    """A component of the kit SBOM: a spec component (or ``kit-images``) with the inventory of its files."""

    id: str
    role: str
    phase: str | None = None
    subject: str | None = None
    inventory: Inventory = Inventory()


@dataclass(frozen=True)
class ShippedSbom:
    """A component SBOM the kit ships, as manifest.json ``sboms[]`` records it (schemas/manifest.schema.json)."""

    path: str
    component: str
    subject: str
    format: str  # "CycloneDX" | "SPDX"
    spec_version: str  # "1.6", "2.3", ...

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "component": self.component,
            "subject": self.subject,
            "format": self.format,
            "specVersion": self.spec_version,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object], *, what: str = "manifest.json: sboms[]") -> ShippedSbom:
        """The record of a (schema-checked) ``sboms[]`` entry; FormatError naming the field if it is not one."""
        read = fields.Fields(document, what)
        shipped = cls(
            path=read.required_text("path"),
            component=read.required_text("component"),
            subject=read.required_text("subject"),
            format=read.required_text("format"),
            spec_version=read.required_text("specVersion"),
        )
        read.finish()
        if shipped.format not in SBOM_FORMATS:
            raise read.fail("format", f"{fields.show(shipped.format)} is not one of {', '.join(SBOM_FORMATS)}")
        return shipped


@dataclass(frozen=True)
class SbomSummary:
    """What an SBOM lists: components (nested ones included, the subject not), by type, licence and supplier."""

    component_count: int
    by_type: dict[str, int]
    licenses: dict[str, int]  # per component that states one; "MIT OR Apache-2.0" counts as itself
    suppliers: dict[str, int]

    def to_json(self) -> dict[str, object]:
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

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.format,
            "specVersion": self.spec_version,
            "subject": {"name": self.subject_name, "version": self.subject_version},
            "documentName": self.document_name,
            "summary": self.summary.to_json(),
        }
