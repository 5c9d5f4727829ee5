"""SPDX 2.3 (and 2.2) JSON: required fields by JSON path first, then spdx-tools' parser and validator.

spdx-tools says what is wrong but rarely where, and trips over optional fields of the wrong JSON type; this
module finds the element a message is about and turns those crashes into SbomErrors. spdx-tools is imported
only when a document gets past the field checks. ``spdx_subject`` finds what a document DESCRIBES.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kitbuilder.core.sbom.model import SbomError, json_kind, json_path

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
        raise SbomError(where, json_path(path), f"expected an object, got {json_kind(element)}")
    for key, wanted in fields.items():
        if key not in element:
            raise SbomError(where, json_path(path), f"required field {key} is missing")
        if not isinstance(element[key], wanted):
            problem = f"expected {_JSON_TYPES[wanted]}, got {json_kind(element[key])}"
            raise SbomError(where, json_path([*path, key]), problem)


def validate_spdx(document: dict[str, Any], where: str) -> None:
    """Check a parsed SPDX 2.3/2.2 document (its ``spdxVersion`` already checked) as spdx-tools does.

    Raises SbomError naming ``where``, the JSON path of the element at fault and spdx-tools' own words.
    """
    _require(document, _SPDX_REQUIRED[""], [], where)
    _require(document["creationInfo"], _SPDX_REQUIRED["creationInfo"], ["creationInfo"], where)
    described = document.get("documentDescribes", [])
    if not isinstance(described, list) or not all(isinstance(spdx_id, str) for spdx_id in described):
        raise SbomError(where, "$.documentDescribes", "expected an array of SPDX ids (strings)")
    for key in _SPDX_LISTS:
        elements = document.get(key, [])
        if not isinstance(elements, list):
            raise SbomError(where, json_path([key]), f"expected an array, got {json_kind(elements)}")
        for index, element in enumerate(elements):
            _require(element, _SPDX_REQUIRED.get(key, {}), [key, index], where)

    # spdx-tools takes about 0.15 s to import; only documents that get this far pay for it.
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import (
        JsonLikeDictParser,
    )

    from kitbuilder.core.sbom.spdx_links import expand_links, link_messages

    # spdx-tools' parser and its whole-document validator are quadratic in the number of elements (spdx_links);
    # the links are made and checked here in linear time, and spdx-tools checks each element.
    try:
        parsed = JsonLikeDictParser().parse(expand_links(document, where))  # type: ignore[no-untyped-call]
    except SPDXParsingError as exc:
        raise _spdx_parse_error(document, where, list(exc.messages)) from None
    except _SPDX_TOOLS_CRASHES as exc:
        raise _spdx_parse_error(document, where, [_crash(exc)]) from None
    first = next(link_messages(parsed), None)
    if first is not None:
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
        # Not stated: made from documentDescribes or a package's hasFiles (spdx_links.expand_links).
        origin = getattr(relationship, "spdx_element_id", None)
        target = str(getattr(relationship, "related_spdx_element_id", None))
        if origin == document.get("SPDXID") and target in document.get("documentDescribes", []):
            return "$.documentDescribes"
        for index, package in enumerate(document.get("packages", [])):
            if package.get("SPDXID") == origin and target in package.get("hasFiles", []):
                return json_path(["packages", index, "hasFiles"])
        return "$.relationships"
    if kind == "CREATION_INFO" or kind == "ACTOR":
        return "$.creationInfo"
    if kind in ("ANNOTATION", "EXTRACTED_LICENSING_INFO", "EXTERNAL_DOCUMENT_REF"):
        keys = {"ANNOTATION": "annotations", "EXTRACTED_LICENSING_INFO": "hasExtractedLicensingInfos"}
        return json_path([keys.get(kind, "externalDocumentRefs")])
    if parent is not None:
        return json_path(parent)
    return "$"


def spdx_subject(document: dict[str, Any]) -> dict[str, object]:
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
