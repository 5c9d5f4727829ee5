"""SPDX links in linear time: the same verdicts as spdx-tools' own whole-document validator, in work that grows
linearly with the document (counted in Python calls, not timed)."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from kitbuilder.core.sbom import SbomError, check_sbom
from kitbuilder.core.sbom.spdx_links import expand_links, link_messages

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = json.loads((ROOT / "examples/lnm-release/sbom/migration-runner.spdx.json").read_text())
ASSET = json.loads((ROOT / "tests/assets/sbom/spdx-2.3.spdx.json").read_text())


def document(files: int = 3, packages: int = 2) -> dict[str, Any]:
    """A valid SPDX 2.3 document: an app package holding ``files`` files, depending on ``packages`` others."""
    file_list = [
        {
            "SPDXID": f"SPDXRef-File-{n}",
            "fileName": f"./lib/f{n}.py",
            "checksums": [{"algorithm": "SHA1", "checksumValue": hashlib.sha1(str(n).encode()).hexdigest()}],
            "licenseConcluded": "MIT",
            "copyrightText": "NOASSERTION",
        }
        for n in range(files)
    ]
    package_list = [
        {
            "SPDXID": "SPDXRef-App",
            "name": "app",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": True,
            "hasFiles": [f["SPDXID"] for f in file_list],
            "packageVerificationCode": {"packageVerificationCodeValue": "0" * 40},
            "licenseConcluded": "MIT",
            "copyrightText": "NOASSERTION",
        },
        *(
            {
                "SPDXID": f"SPDXRef-Package-{n}",
                "name": f"dep{n}",
                "versionInfo": "1.0",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "licenseDeclared": "Apache-2.0",
            }
            for n in range(packages)
        ),
    ]
    relationships = [
        {"spdxElementId": "SPDXRef-App", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": p["SPDXID"]}
        for p in package_list[1:]
    ]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "generated",
        "documentNamespace": "https://example.com/spdx/generated",
        "creationInfo": {"created": "2025-01-01T00:00:00Z", "creators": ["Tool: tests"]},
        "documentDescribes": ["SPDXRef-App"],
        "packages": package_list,
        "files": file_list,
        "relationships": relationships,
    }


def _changed(**edits: Any) -> dict[str, Any]:
    result = document()
    for key, edit in edits.items():
        result[key] = edit(copy.deepcopy(result.get(key)))
    return result


def _first_package(edit: dict[str, Any]) -> Any:
    return lambda packages: [{**packages[0], **edit}, *packages[1:]]


def _dep_package(edit: dict[str, Any]) -> Any:
    return lambda packages: [packages[0], {**packages[1], **edit}, *packages[2:]]


def _first_file(edit: dict[str, Any]) -> Any:
    return lambda files: [{**files[0], **edit}, *files[1:]]


def _add(*items: dict[str, Any]) -> Any:
    return lambda existing: [*(existing or []), *items]


def _relationship(origin: str, kind: str, target: str) -> dict[str, str]:
    return {"spdxElementId": origin, "relationshipType": kind, "relatedSpdxElement": target}


DOCUMENTS: dict[str, dict[str, Any]] = {
    "valid": document(),
    "example": EXAMPLE,
    "asset": ASSET,
    "relationship_to_a_missing_id": _changed(
        relationships=_add(_relationship("SPDXRef-App", "DEPENDS_ON", "SPDXRef-X"))
    ),
    "relationship_from_a_missing_id": _changed(
        relationships=_add(_relationship("SPDXRef-Gone", "CONTAINS", "SPDXRef-App"))
    ),
    "relationship_to_an_unknown_external_document": _changed(
        relationships=_add(_relationship("SPDXRef-App", "DEPENDS_ON", "DocumentRef-other:SPDXRef-lib"))
    ),
    "relationship_id_with_two_colons": _changed(
        relationships=_add(_relationship("SPDXRef-App", "DEPENDS_ON", "DocumentRef-a:b:c"))
    ),
    "relationship_to_none": _changed(relationships=_add(_relationship("SPDXRef-App", "DEPENDS_ON", "NONE"))),
    "package_not_analysed_holds_a_file": _changed(packages=_dep_package({"hasFiles": ["SPDXRef-File-0"]})),
    "package_not_analysed_is_container_of_a_file": _changed(
        relationships=_add(_relationship("SPDXRef-File-1", "CONTAINED_BY", "SPDXRef-Package-0"))
    ),
    "package_not_analysed_with_licence_info_from_files": _changed(
        packages=_dep_package({"licenseInfoFromFiles": ["MIT"]})
    ),
    "has_files_repeated_and_stated_inverse": _changed(
        packages=_first_package({"hasFiles": ["SPDXRef-File-0", "SPDXRef-File-0", "SPDXRef-File-1"]}),
        relationships=_add(_relationship("SPDXRef-File-1", "CONTAINED_BY", "SPDXRef-App")),
    ),
    "has_files_names_a_missing_file": _changed(packages=_first_package({"hasFiles": ["SPDXRef-Nothing"]})),
    "described_twice": _changed(
        relationships=_add(_relationship("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-App")),
        documentDescribes=lambda d: [*d, "SPDXRef-App"],
    ),
    "describes_nothing": _changed(documentDescribes=lambda _: []),
    "described_by_instead": _changed(
        documentDescribes=lambda _: [],
        relationships=_add(_relationship("SPDXRef-App", "DESCRIBED_BY", "SPDXRef-DOCUMENT")),
    ),
    "unknown_licence_ref": _changed(files=_first_file({"licenseConcluded": "LicenseRef-mine"})),
    "declared_licence_ref": _changed(
        files=_first_file({"licenseConcluded": "LicenseRef-mine OR MIT"}),
        hasExtractedLicensingInfos=lambda _: [{"licenseId": "LicenseRef-mine", "extractedText": "mine"}],
    ),
    "external_licence_ref_of_unknown_document": _changed(
        files=_first_file({"licenseInfoInFiles": ["DocumentRef-x:LicenseRef-y"]})
    ),
    "external_licence_ref_not_a_licence_ref": _changed(
        files=_first_file({"licenseInfoInFiles": ["DocumentRef-x:Thing"]})
    ),
    "licence_exception_used_as_licence": _changed(
        packages=_dep_package({"licenseDeclared": "Classpath-exception-2.0"})
    ),
    "duplicate_ids": _changed(files=lambda files: [*files, {**files[0]}]),
    "package_id_badly_formed": _changed(
        packages=_dep_package({"SPDXID": "Package_0"}),
        relationships=lambda _: [],
    ),
    "snippet_of_a_missing_file": _changed(
        snippets=_add(
            {
                "SPDXID": "SPDXRef-Snippet",
                "snippetFromFile": "SPDXRef-Nope",
                "ranges": [{"startPointer": {"offset": 1}, "endPointer": {"offset": 2}}],
            }
        )
    ),
    "annotation_of_a_missing_id": _changed(
        annotations=_add(
            {
                "annotationDate": "2025-01-01T00:00:00Z",
                "annotationType": "REVIEW",
                "annotator": "Person: Ann",
                "comment": "ok",
                "spdxElementId": "SPDXRef-Ghost",
            }
        )
    ),
    "spdx_2_2_specification_for": _changed(
        spdxVersion=lambda _: "SPDX-2.2",
        relationships=_add(_relationship("SPDXRef-App", "SPECIFICATION_FOR", "SPDXRef-Package-0")),
    ),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_links_are_checked_as_spdx_tools_checks_them(name: str) -> None:
    """spdx-tools is the oracle: the same relationships parsed, the same messages in the same order."""
    source = DOCUMENTS[name]
    theirs = JsonLikeDictParser().parse(copy.deepcopy(source))  # type: ignore[no-untyped-call]
    ours = JsonLikeDictParser().parse(expand_links(copy.deepcopy(source), "x.spdx.json"))  # type: ignore[no-untyped-call]
    assert ours.relationships == theirs.relationships
    expected = [m.validation_message for m in validate_full_spdx_document(theirs)]
    assert [m.validation_message for m in link_messages(ours)] == expected
    if name in ("valid", "example", "asset", "has_files_repeated_and_stated_inverse", "described_twice"):
        assert expected == []  # the cases meant to be valid are


def test_has_files_that_is_not_a_list_of_ids_is_refused_by_its_path() -> None:
    broken = _changed(packages=_first_package({"hasFiles": ["SPDXRef-File-0", 7]}))
    with pytest.raises(SbomError) as error:
        check_sbom(json.dumps(broken).encode(), "sbom/x.spdx.json")
    assert error.value.json_path == "$.packages[0].hasFiles"


@pytest.mark.parametrize(
    ("document_", "path"),
    [
        (
            _changed(packages=_first_package({"hasFiles": ["SPDXRef-File-0", "SPDXRef-Nothing"]})),
            "$.packages[0].hasFiles",
        ),
        (_changed(documentDescribes=lambda d: [*d, "SPDXRef-Nobody"]), "$.documentDescribes"),
        (_changed(relationships=_add(_relationship("SPDXRef-App", "DEPENDS_ON", "SPDXRef-X"))), "$.relationships[2]"),
    ],
)
def test_a_link_to_a_missing_element_is_refused_where_it_is_stated(document_: dict[str, Any], path: str) -> None:
    with pytest.raises(SbomError) as error:
        check_sbom(json.dumps(document_).encode(), "sbom/x.spdx.json")
    assert error.value.json_path == path
    assert "did not find the referenced spdx_id" in error.value.problem


def _python_calls(data: bytes) -> int:
    """How many Python and C functions ``check_sbom`` calls on ``data``: work, counted the same on every machine."""
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        check_sbom(data, "sbom/big.spdx.json")
    finally:
        sys.setprofile(None)
    return calls


def test_validation_work_grows_linearly_with_the_document() -> None:
    """Four times the files, packages and relationships: about four times the calls (spdx-tools alone: sixteen)."""
    check_sbom(json.dumps(document(5, 1)).encode(), "warm-up")  # imports and the licence cache outside the count
    small = _python_calls(json.dumps(document(files=300, packages=30)).encode())
    large = _python_calls(json.dumps(document(files=1200, packages=120)).encode())
    assert large / small < 5, (small, large)
