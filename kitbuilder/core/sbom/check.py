"""``check_sbom``: is this shipped SBOM CycloneDX JSON 1.4-1.6 or SPDX 2.3/2.2 JSON, valid, and what does it list?

It reads the bytes as strict JSON, tells the formats apart (with a clear refusal for XML, SPDX tag-value and
SPDX 3), then hands the document to ``cyclonedx`` or ``spdx`` for validation and to ``summary`` for counting.
"""

from __future__ import annotations

import json
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.core.sbom.cyclonedx import validate_cyclonedx
from kitbuilder.core.sbom.model import CYCLONEDX_VERSIONS, SPDX_VERSIONS, SbomError, SbomInfo, json_kind
from kitbuilder.core.sbom.spdx import spdx_subject, validate_spdx
from kitbuilder.core.sbom.summary import summarize_sbom
from kitbuilder.errors import FormatError


def check_sbom(data: bytes, where: str) -> SbomInfo:
    """Detect CycloneDX JSON 1.4–1.6 or SPDX 2.3/2.2 JSON, validate it and summarise it.

    Raises SbomError naming ``where``, the JSON path of the first problem and what is wrong: not JSON,
    another format or version, a schema violation, a duplicate bom-ref, an SPDX document spdx-tools refuses.
    """
    return check_sbom_document(load_sbom(data, where), where)


def load_sbom(data: bytes, where: str) -> dict[str, object]:
    """The parsed document (strict JSON, an object), for a caller that also reads fields itself."""
    return _load(data, where)


def check_sbom_document(document: dict[str, Any], where: str) -> SbomInfo:
    """``check_sbom`` on a document already parsed by ``load_sbom`` (so large SBOMs are parsed once)."""
    if "bomFormat" in document:
        version = _cyclonedx_version(document, where)
        validate_cyclonedx(document, version, where)
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
        validate_spdx(document, where)
        subject = spdx_subject(document)
        return SbomInfo(
            format="SPDX",
            spec_version=spdx_version.removeprefix("SPDX-"),
            subject_name=_text(subject.get("name", subject.get("fileName"))),
            subject_version=_text(subject.get("versionInfo")),
            summary=summarize_sbom(document, where=where),
            document_name=document["name"],
        )
    if "spdx.org/rdf/3" in json.dumps(document.get("@context", "")):
        raise SbomError(where, "$", "SPDX 3 JSON-LD is not supported; ship SPDX-2.3 JSON or CycloneDX JSON 1.4-1.6")
    raise SbomError(
        where, "$", "neither CycloneDX JSON (no bomFormat) nor SPDX JSON (no spdxVersion); ship one of the two"
    )


def _text(value: object) -> str | None:
    """A string field of the described element, or None (a value of another JSON type names nothing)."""
    return value if isinstance(value, str) else None


def parse_limits(size: int) -> jsonio.ParseLimits:
    """What an SBOM of ``size`` bytes may cost to parse: what honest SBOMs hold, per byte.

    A component, file or package takes tens of bytes per value and over a hundred per object; 8 MiB
    of `{},` is 2.8 million Python objects (200 MiB) and was parsed whole. The same rule holds when
    a shipped SBOM is checked at build and when `kit inspect --sbom` reads one back.
    """
    return jsonio.ParseLimits(
        max_values=size // 6 + (64 << 10), max_containers=size // 24 + (16 << 10), why=f"an SBOM of {size} bytes"
    )


def _load(data: bytes, where: str) -> dict[str, Any]:
    """Strict JSON: no duplicate keys or NaN (two parsers could read them differently); floats are allowed."""
    try:
        jsonio.check_cost(data, parse_limits(len(data)), what=where)
    except FormatError as exc:
        raise SbomError(where, "$", exc.message.removeprefix(f"{where}: ")) from None
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
        value = jsonio.loads_strict(text, floats=True)
    except ValueError as exc:  # loads_strict turns absurd nesting into ValueError too
        raise SbomError(where, "$", f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SbomError(where, "$", f"expected a JSON object (a CycloneDX or SPDX document), got {json_kind(value)}")
    return value


def _cyclonedx_version(document: dict[str, Any], where: str) -> str:
    if document["bomFormat"] != "CycloneDX":
        raise SbomError(where, "$.bomFormat", f"{document['bomFormat']!r} is not 'CycloneDX'")
    version = document.get("specVersion")
    if not isinstance(version, str) or version not in CYCLONEDX_VERSIONS:
        what = "is missing" if version is None else f"{version!r} is not supported"
        raise SbomError(where, "$.specVersion", f"{what}; ship CycloneDX JSON {', '.join(CYCLONEDX_VERSIONS)}")
    return version
