"""The SPDX 2.3 rules that tie a document's elements together, checked in one pass with sets.

spdx-tools checks them by searching lists: every relationship rebuilds the list of every SPDX id in the document,
every ``hasFiles`` entry is compared with every relationship, every licence expression rebuilds the list of
extracted licences. That is quadratic: a 9.6 MiB SPDX document took ten minutes. Here the same rules (which ids
must exist, which references must resolve, what a package that was not analysed may contain, which licence refs
are declared) are checked against sets built once, and spdx-tools still checks each element on its own
(``validate_package``, ``validate_file``...). The messages are spdx-tools' own words, so a document gets the same
verdict and explanation either way.

Two halves: ``expand_links`` turns ``documentDescribes`` and ``hasFiles`` into relationships before spdx-tools'
parser sees the document (its parser dedups them against the relationships pairwise), and ``link_messages``
replaces ``validate_full_spdx_document`` on the parsed document. spdx-tools is imported only by callers that got
past the cheap field checks (``spdx``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from spdx_tools.common.spdx_licensing import spdx_licensing  # type: ignore[import-untyped]
from spdx_tools.spdx.model.document import Document
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.relationship_filters import filter_by_type_and_origin, filter_by_type_and_target
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.model.spdx_none import SpdxNone
from spdx_tools.spdx.validation.actor_validator import validate_actor
from spdx_tools.spdx.validation.creation_info_validator import validate_creation_info
from spdx_tools.spdx.validation.extracted_licensing_info_validator import validate_extracted_licensing_infos
from spdx_tools.spdx.validation.file_validator import validate_file
from spdx_tools.spdx.validation.package_validator import validate_package
from spdx_tools.spdx.validation.snippet_validator import validate_snippet
from spdx_tools.spdx.validation.spdx_id_validators import is_valid_external_doc_ref_id, is_valid_internal_spdx_id
from spdx_tools.spdx.validation.validation_message import SpdxElementType, ValidationContext, ValidationMessage

from kitbuilder.core.sbom.model import SbomError, json_path

# What a relationship and its inverse are (spdx-tools treats "A CONTAINS B" and "B CONTAINED_BY A" as one).
_INVERSE = {
    "DESCRIBES": "DESCRIBED_BY",
    "DESCRIBED_BY": "DESCRIBES",
    "CONTAINS": "CONTAINED_BY",
    "CONTAINED_BY": "CONTAINS",
}


def expand_links(document: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A shallow copy of ``document`` whose ``documentDescribes`` and packages' ``hasFiles`` are relationships.

    spdx-tools' parser makes the same relationships (DESCRIBES from the document, CONTAINS from the package),
    leaving out one that the document's relationships already state either way round, and dropping repeats
    within one list; here that is a set lookup instead of a comparison with every relationship. Raises
    SbomError naming ``$.packages[i].hasFiles`` when it is not an array of SPDX ids.
    """
    relationships = document.get("relationships", [])
    stated = {_key(r) for r in relationships if isinstance(r, dict)}
    generated: list[dict[str, Any]] = []

    def add(origin: Any, kind: str, target: str, known: set[tuple[Any, str, Any]]) -> None:
        if (origin, kind, target) in known or (target, _INVERSE[kind], origin) in known:
            return
        generated.append({"spdxElementId": origin, "relationshipType": kind, "relatedSpdxElement": target})

    own = document.get("SPDXID")
    for described in dict.fromkeys(document.get("documentDescribes", [])):
        add(own, "DESCRIBES", described, stated)
    # Like spdx-tools, a package's files are checked against the stated relationships and DESCRIBES ones.
    known = stated | {_key(r) for r in generated}
    packages = [dict(p) for p in document.get("packages", [])]
    for index, package in enumerate(packages):
        files = package.pop("hasFiles", [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise SbomError(
                where, json_path(["packages", index, "hasFiles"]), "expected an array of SPDX ids (strings)"
            )
        for file_id in dict.fromkeys(files):
            add(package.get("SPDXID"), "CONTAINS", file_id, known)
    expanded = {key: value for key, value in document.items() if key != "documentDescribes"}
    if packages:
        expanded["packages"] = packages
    if generated:
        expanded["relationships"] = [*relationships, *generated]
    return expanded


def _key(relationship: Mapping[str, Any]) -> tuple[Any, str, Any]:
    kind = relationship.get("relationshipType")
    normal = kind.replace("-", "_").upper() if isinstance(kind, str) else ""
    return relationship.get("spdxElementId"), normal, relationship.get("relatedSpdxElement")


class _Index:
    """What the cross-element rules look up, built once per document."""

    def __init__(self, document: Document) -> None:
        self.document_id = document.creation_info.spdx_id
        self.file_ids = {f.spdx_id for f in document.files}
        self.package_ids = {p.spdx_id for p in document.packages}
        self.all_ids = {self.document_id, *self.file_ids, *self.package_ids, *(s.spdx_id for s in document.snippets)}
        self.external_refs = {r.document_ref_id for r in document.creation_info.external_document_refs}
        self.license_refs = {info.license_id for info in document.extracted_licensing_info}
        self.contains: dict[str, list[Relationship]] = {}
        self.contained_by: dict[str, list[Relationship]] = {}
        for relationship in document.relationships:
            if relationship.relationship_type == RelationshipType.CONTAINS:
                self.contains.setdefault(relationship.spdx_element_id, []).append(relationship)
            elif relationship.relationship_type == RelationshipType.CONTAINED_BY:
                target = relationship.related_spdx_element_id
                if isinstance(target, str):
                    self.contained_by.setdefault(target, []).append(relationship)

    def id_problems(self, spdx_id: str, *, within: set[str] | None = None, of: str = "") -> list[str]:
        """spdx-tools' ``validate_spdx_id``: the id's form, and that it is among ``within`` (when given)."""
        split = spdx_id.split(":")
        if len(split) > 2:
            return [
                "spdx_id must not contain more than one colon in order to separate the external document reference "
                f"id from the internal SPDX id, but is: {spdx_id}"
            ]
        problems: list[str] = []
        if len(split) == 2:
            if not is_valid_external_doc_ref_id(split[0]):
                problems.append(
                    'the external document reference part of spdx_id must only contain letters, numbers, ".", "-" '
                    f'and "+" and must begin with "DocumentRef-", but is: {split[0]}'
                )
            if not is_valid_internal_spdx_id(split[1]):
                problems.append(
                    'the internal SPDX id part of spdx_id must only contain letters, numbers, "." and "-" and must '
                    f'begin with "SPDXRef-", but is: {split[1]}'
                )
            if split[0] not in self.external_refs:
                problems.append(f'did not find the external document reference "{split[0]}" in the SPDX document')
            return problems
        if not is_valid_internal_spdx_id(spdx_id):
            problems.append(
                'spdx_id must only contain letters, numbers, "." and "-" and must begin with "SPDXRef-", but is: '
                f"{spdx_id}"
            )
        if within is not None and spdx_id not in within:
            problems.append(f'did not find the referenced spdx_id "{spdx_id}" in the SPDX document{of}')
        return problems

    def license_messages(
        self, expression: Any, parent_id: str, context: ValidationContext | None = None
    ) -> Iterator[ValidationMessage]:
        """spdx-tools' ``validate_license_expression``, with the licence refs and document refs in sets."""
        if expression is None or isinstance(expression, (SpdxNoAssertion, SpdxNone)):
            return
        context = context or ValidationContext(
            parent_id=parent_id, element_type=SpdxElementType.LICENSE_EXPRESSION, full_element=expression
        )
        invalid, parse_error = _license_list_check(expression)
        for token in invalid:
            if ":" in token:
                split = token.split(":")
                if len(split) != 2:
                    yield ValidationMessage(
                        f"Too many colons in license reference: {token}. A license reference must only contain a "
                        "single colon to separate an external document reference from the license reference.",
                        context,
                    )
                    continue
                if not split[1].startswith("LicenseRef-"):
                    yield ValidationMessage(
                        f'A license reference must start with "LicenseRef-", but is: {split[1]} in external license '
                        f"reference {token}.",
                        context,
                    )
                if split[0] not in self.external_refs:
                    yield ValidationMessage(
                        f'Did not find the external document reference "{split[0]}" in the SPDX document. From the '
                        f"external license reference {token}.",
                        context,
                    )
            elif token not in self.license_refs:
                yield ValidationMessage(
                    f"Unrecognized license reference: {token}. license_expression must only use IDs from the license "
                    f"list or extracted licensing info, but is: {expression}",
                    context,
                )
        if parse_error is not None:
            yield ValidationMessage(f"{parse_error}. for license_expression: {expression}", context)

    def license_list_messages(self, expressions: list[Any], parent_id: str) -> Iterator[ValidationMessage]:
        context = ValidationContext(
            parent_id=parent_id, element_type=SpdxElementType.LICENSE_EXPRESSION, full_element=expressions
        )
        for expression in expressions:
            yield from self.license_messages(expression, parent_id, context)


# Expression text → (symbols not on the SPDX licence list, the strict parser's complaint or None).
_LICENSE_LIST_CHECKS: dict[str, tuple[tuple[str, ...], str | None]] = {}
_MAX_CACHED = 4096


def _license_list_check(expression: Any) -> tuple[tuple[str, ...], str | None]:
    """The symbols of ``expression`` (as spdx-tools parsed it) not on the SPDX licence list, and the strict
    parser's complaint (or None).

    Neither depends on the document, and a large SBOM repeats a few expressions thousands of times: each distinct
    text is checked once. spdx-tools parsed equal texts into equal expressions, so the first one stands for all.
    """
    text = str(expression)
    cached = _LICENSE_LIST_CHECKS.get(text)
    if cached is not None:
        return cached
    from license_expression import ExpressionError, ExpressionParseError  # type: ignore[import-untyped]

    invalid = tuple(spdx_licensing.validate(expression).invalid_symbols)
    complaint: str | None = None
    try:
        spdx_licensing.parse(text, validate=True, strict=True)
    except ExpressionParseError as exc:
        complaint = str(exc)
    except ExpressionError:
        pass  # the invalid symbols, reported above
    if len(_LICENSE_LIST_CHECKS) >= _MAX_CACHED:
        _LICENSE_LIST_CHECKS.clear()
    _LICENSE_LIST_CHECKS[text] = (invalid, complaint)
    return invalid, complaint


def link_messages(document: Document) -> Iterator[ValidationMessage]:
    """What spdx-tools' ``validate_full_spdx_document`` reports, in its order, in time linear in the document."""
    version = document.creation_info.spdx_version
    index = _Index(document)
    document_context = ValidationContext(spdx_id=index.document_id, element_type=SpdxElementType.DOCUMENT)
    if version not in ("SPDX-2.2", "SPDX-2.3"):
        yield ValidationMessage(
            f'only SPDX versions "SPDX-2.2" and "SPDX-2.3" are supported, but the document\'s spdx_version is: '
            f"{version}",
            document_context,
        )
        return
    yield from validate_creation_info(document.creation_info, version)
    for package in document.packages:
        context = _element_context(package, index, SpdxElementType.PACKAGE)
        yield from (ValidationMessage(m, context) for m in index.id_problems(package.spdx_id))
        if not package.files_analyzed:
            found = [r for r in index.contains.get(package.spdx_id, []) if r.related_spdx_element_id in index.file_ids]
            found += [r for r in index.contained_by.get(package.spdx_id, []) if r.spdx_element_id in index.file_ids]
            if found:
                yield ValidationMessage(
                    f"package must contain no elements if files_analyzed is False, but found {found}", context
                )
        yield from index.license_messages(package.license_concluded, package.spdx_id)
        if package.license_info_from_files:
            if not package.files_analyzed:
                yield ValidationMessage(
                    "license_info_from_files must be None if files_analyzed is False, but is: "
                    f"{package.license_info_from_files}",
                    context,
                )
            else:
                yield from index.license_list_messages(package.license_info_from_files, package.spdx_id)
        yield from index.license_messages(package.license_declared, package.spdx_id)
        yield from validate_package(package, version, context)
    for file in document.files:
        context = _element_context(file, index, SpdxElementType.FILE)
        yield from (ValidationMessage(m, context) for m in index.id_problems(file.spdx_id))
        yield from index.license_messages(file.license_concluded, file.spdx_id)
        yield from index.license_list_messages(file.license_info_in_file, file.spdx_id)
        yield from validate_file(file, version, context)
    for snippet in document.snippets:
        context = _element_context(snippet, index, SpdxElementType.SNIPPET)
        yield from (ValidationMessage(m, context) for m in index.id_problems(snippet.spdx_id))
        problems = index.id_problems(snippet.file_spdx_id, within=index.file_ids, of="'s files")
        yield from (ValidationMessage(m, context) for m in problems)
        yield from index.license_messages(snippet.license_concluded, snippet.spdx_id)
        yield from index.license_list_messages(snippet.license_info_in_snippet, snippet.spdx_id)
        yield from validate_snippet(snippet, version, context)
    for annotation in document.annotations:
        context = ValidationContext(element_type=SpdxElementType.ANNOTATION, full_element=annotation)
        yield from validate_actor(annotation.annotator, "annotation")
        problems = index.id_problems(annotation.spdx_id, within=index.all_ids)
        yield from (ValidationMessage(m, context) for m in problems)
    for relationship in document.relationships:
        context = ValidationContext(element_type=SpdxElementType.RELATIONSHIP, full_element=relationship)
        problems = index.id_problems(relationship.spdx_element_id, within=index.all_ids)
        target = relationship.related_spdx_element_id
        if isinstance(target, str):
            problems += index.id_problems(target, within=index.all_ids)
        yield from (ValidationMessage(m, context) for m in problems)
        kind = relationship.relationship_type
        if version == "SPDX-2.2" and kind in (
            RelationshipType.SPECIFICATION_FOR,
            RelationshipType.REQUIREMENT_DESCRIPTION_FOR,
        ):
            yield ValidationMessage(f"{kind} is not supported in SPDX-2.2", context)
    yield from validate_extracted_licensing_infos(document.extracted_licensing_info)
    yield from _document_messages(document, index, document_context)


def _element_context(element: Any, index: _Index, kind: SpdxElementType) -> ValidationContext:
    return ValidationContext(
        spdx_id=element.spdx_id, parent_id=index.document_id, element_type=kind, full_element=element
    )


def _document_messages(document: Document, index: _Index, context: ValidationContext) -> Iterator[ValidationMessage]:
    """The document describes something (unless it is one package alone), and no SPDX id is used twice."""
    describes = filter_by_type_and_origin(document.relationships, RelationshipType.DESCRIBES, index.document_id)
    described_by = filter_by_type_and_target(document.relationships, RelationshipType.DESCRIBED_BY, index.document_id)
    single_package = len(document.packages) == 1 and not document.files and not document.snippets
    if not single_package and not describes + described_by:
        yield ValidationMessage(
            f'there must be at least one relationship "{index.document_id} DESCRIBES ..." or "... DESCRIBED_BY '
            f'{index.document_id}" when there is not only a single package present',
            ValidationContext(spdx_id=index.document_id, element_type=SpdxElementType.DOCUMENT),
        )
    seen: set[str] = set()
    duplicated: set[str] = set()
    for spdx_id in (
        index.document_id,
        *(f.spdx_id for f in document.files),
        *(p.spdx_id for p in document.packages),
        *(s.spdx_id for s in document.snippets),
    ):
        (duplicated if spdx_id in seen else seen).add(spdx_id)
    if duplicated:
        yield ValidationMessage(
            "every spdx_id must be unique within the document, but found the following duplicates: "
            f"{sorted(duplicated)}",
            context,
        )
