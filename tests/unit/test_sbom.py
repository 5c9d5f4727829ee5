"""The kit's CycloneDX SBOM and the checks of shipped SBOMs: bytes in, documents or located errors out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from kitbuilder.core.sbom import (
    KIT_SBOM_PATH,
    KitComponent,
    SbomError,
    SbomFile,
    SbomImage,
    ShippedSbom,
    check_sbom,
    listed_files,
    render_kit_sbom,
    summarize_sbom,
)

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets" / "sbom"
EXAMPLE_SPDX = ROOT / "examples" / "lnm-release" / "sbom" / "migration-runner.spdx.json"
RUNNER = "registry.local/stellaops/migration-runner"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def kit_inputs(**changes: Any) -> dict[str, Any]:
    files = [
        SbomFile("migrations/21-101/up.sql", sha("up"), 120, "migration", "21-101"),
        SbomFile("migrations/21-101/revert.sql", sha("revert"), 80, "migration", "21-101"),
        SbomFile("seeds/object-store/rows.ndjson", sha("rows"), 4096, "seed", "object-store"),
        SbomFile("sbom/runner/runner.spdx.json", sha("spdx"), 2000, "sbom", "runner"),
        SbomFile("sbom/worker/worker.cdx.json", sha("cdx"), 1500, "sbom", "worker"),
        SbomFile("docs/operator/RUNBOOK.md", sha("runbook"), 31, "doc", "operator"),
        SbomFile("images/index.json", sha("index"), 400, "image", "images"),
        SbomFile(KIT_SBOM_PATH, sha("itself"), 1, "sbom", "kit-sbom"),
    ]
    inputs: dict[str, Any] = {
        "name": "lnm-release",
        "version": "2025.11.1",
        "product": "concelier",
        "tool_version": "0.1.0",
        "created": "2025-12-01T00:00:00Z",
        "components": [
            KitComponent("21-101", "migration", phase="21-101"),
            KitComponent("object-store", "seed"),
            KitComponent("runner", "sbom", subject=RUNNER),
            KitComponent("worker", "sbom", subject="concelier-worker"),
            KitComponent("operator", "doc"),
        ],
        "files": files,
        "images": [
            SbomImage(
                f"{RUNNER}:2025.11",
                "sha256:" + sha("manifest"),
                "application/vnd.oci.image.manifest.v1+json",
                ("linux/amd64",),
                52_000_000,
            )
        ],
        "shipped": [
            ShippedSbom("sbom/runner/runner.spdx.json", "runner", RUNNER, "SPDX", "2.3"),
            ShippedSbom("sbom/worker/worker.cdx.json", "worker", "concelier-worker", "CycloneDX", "1.5"),
        ],
    }
    inputs.update(changes)
    return inputs


@pytest.fixture(scope="module")
def kit_sbom() -> bytes:
    return render_kit_sbom(**kit_inputs())


def by_ref(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    stack = list(document["components"])
    while stack:
        component = stack.pop()
        found[component["bom-ref"]] = component
        stack.extend(component.get("components", []))
    return found


# --- the kit's own SBOM -----------------------------------------------------------------------------------------


def test_kit_sbom_is_byte_identical_for_identical_inputs(kit_sbom: bytes) -> None:
    assert render_kit_sbom(**kit_inputs()) == kit_sbom
    assert kit_sbom.endswith(b"}\n")
    assert json.loads(kit_sbom)["serialNumber"].startswith("urn:uuid:")


def test_serial_number_changes_with_content_and_timestamp_only_when_created(kit_sbom: bytes) -> None:
    files = kit_inputs()["files"]
    changed = [dataclasses.replace(files[0], sha256=sha("up v2")), *files[1:]]
    serial = json.loads(kit_sbom)["serialNumber"]
    assert json.loads(render_kit_sbom(**kit_inputs(files=changed)))["serialNumber"] != serial
    undated = json.loads(render_kit_sbom(**kit_inputs(created=None)))
    assert "timestamp" not in undated["metadata"]
    assert undated["serialNumber"] != serial
    assert json.loads(kit_sbom)["metadata"]["timestamp"] == "2025-12-01T00:00:00Z"


def test_kit_sbom_passes_cyclonedx_python_lib_strict_1_6_validator(kit_sbom: bytes) -> None:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(kit_sbom.decode()) is None


def test_kit_sbom_shows_the_kit_structure(kit_sbom: bytes) -> None:
    document = json.loads(kit_sbom)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    subject = document["metadata"]["component"]
    assert (subject["name"], subject["version"], subject["bom-ref"]) == (
        "lnm-release",
        "2025.11.1",
        "kit:lnm-release@2025.11.1",
    )
    assert document["metadata"]["tools"]["components"][0]["name"] == "kitbuilder"
    refs = by_ref(document)
    migration = refs["component:21-101"]
    assert migration["type"] == "application"
    assert {"name": "kitbuilder:phase", "value": "21-101"} in migration["properties"]
    assert [c["bom-ref"] for c in migration["components"]] == [
        "file:migrations/21-101/revert.sql",
        "file:migrations/21-101/up.sql",
    ]
    assert refs["file:migrations/21-101/up.sql"]["hashes"] == [{"alg": "SHA-256", "content": sha("up")}]
    assert refs["component:object-store"]["type"] == "data"
    # Files of a component nobody listed still get a group; the SBOM does not list itself.
    assert [c["name"] for c in refs["component:images"]["components"]] == ["images/index.json"]
    assert f"file:{KIT_SBOM_PATH}" not in refs


def test_images_are_containers_and_shipped_sboms_bom_references(kit_sbom: bytes) -> None:
    refs = by_ref(json.loads(kit_sbom))
    image = refs[f"image:{RUNNER}:2025.11"]
    assert image["type"] == "container"
    assert image["hashes"] == [{"alg": "SHA-256", "content": sha("manifest")}]
    assert image["purl"] == (
        f"pkg:oci/migration-runner@sha256:{sha('manifest')}?arch=amd64&repository_url={RUNNER}&tag=2025.11"
    )
    # The runner SBOM describes the image, so its reference sits on the container component.
    assert image["externalReferences"] == [
        {
            "type": "bom",
            "url": "sbom/runner/runner.spdx.json",
            "comment": f"SPDX 2.3 SBOM of {RUNNER}",
            "hashes": [{"alg": "SHA-256", "content": sha("spdx")}],
        }
    ]
    # A subject that is nothing in the kit: the reference sits on the SBOM's own component.
    assert refs["component:worker"]["externalReferences"][0]["url"] == "sbom/worker/worker.cdx.json"


def test_listed_files_are_the_payload_files_with_their_digests(kit_sbom: bytes) -> None:
    expected = {f.path: f.sha256 for f in kit_inputs()["files"] if f.path != KIT_SBOM_PATH}
    assert listed_files(json.loads(kit_sbom)) == expected


def test_kit_sbom_checks_and_summarises_as_a_shipped_one(kit_sbom: bytes) -> None:
    info = check_sbom(kit_sbom, KIT_SBOM_PATH)
    assert (info.format, info.spec_version, info.subject_name, info.subject_version) == (
        "CycloneDX",
        "1.6",
        "lnm-release",
        "2025.11.1",
    )
    assert info.summary.to_json() == {
        "componentCount": 14,
        "byType": {"application": 1, "container": 1, "data": 5, "file": 7},
        "licenses": {},
        "suppliers": {},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"files": [SbomFile("docs/a/x.md", "ZZ", 1, "doc", "a")]},
            "sbom/kit.cdx.json: file:docs/a/x.md: sha256 'ZZ' is not 64 lowercase hex digits",
        ),
        (
            {"images": [SbomImage("a:1", "sha512:" + "0" * 128, "m", (), 1)]},
            "image:a:1: digest 'sha512:",
        ),
        (
            {"shipped": [ShippedSbom("sbom/x/missing.spdx.json", "x", "x", "SPDX", "2.3")]},
            "file:sbom/x/missing.spdx.json: a shipped SBOM must be one of the kit's files",
        ),
        ({"components": [KitComponent("a", "doc"), KitComponent("a", "seed")]}, "component:a: two kit components"),
        ({"created": "1 Dec 2025"}, "$.metadata.timestamp: '1 Dec 2025' is not a 'date-time'"),
        (
            {
                "files": [
                    SbomFile("docs/a/x.md", sha("1"), 1, "doc", "a"),
                    SbomFile("docs/a/x.md", sha("2"), 1, "doc", "a"),
                ],
                "shipped": [],
            },
            "$.components[5].components[1].bom-ref: bom-ref 'file:docs/a/x.md' is already used at "
            "$.components[5].components[0]",
        ),
    ],
)
def test_inputs_that_make_no_valid_sbom_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SbomError) as error:
        render_kit_sbom(**kit_inputs(**change))
    assert message in error.value.message


# --- shipped SBOMs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format_", "version", "subject"),
    [
        ("cyclonedx-1.4.cdx.json", "CycloneDX", "1.4", ("concelier-migration-runner", "2025.11.1")),
        ("cyclonedx-1.5.cdx.json", "CycloneDX", "1.5", ("concelier-worker", "2025.11.1")),
        ("cyclonedx-1.6.cdx.json", "CycloneDX", "1.6", ("registry.local/stellaops/concelier", "2025.11")),
        ("spdx-2.3.spdx.json", "SPDX", "2.3", ("concelier-exporter", "2025.11.1")),
    ],
)
def test_valid_shipped_sboms_are_accepted(name: str, format_: str, version: str, subject: tuple[str, str]) -> None:
    info = check_sbom((ASSETS / name).read_bytes(), f"sbom/x/{name}")
    assert (info.format, info.spec_version, (info.subject_name, info.subject_version)) == (format_, version, subject)
    if format_ == "CycloneDX":  # the fixtures themselves pass the reference validator
        reference = JsonStrictValidator(SchemaVersion.from_version(version))
        assert reference.validate_str((ASSETS / name).read_text()) is None


def test_the_example_spdx_sbom_passes_spdx_tools() -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    assert validate_full_spdx_document(parse_file(str(EXAMPLE_SPDX))) == []
    info = check_sbom(EXAMPLE_SPDX.read_bytes(), "sbom/migration-runner/migration-runner.spdx.json")
    assert (info.format, info.spec_version, info.subject_name) == ("SPDX", "2.3", "StellaOps.Concelier.MigrationRunner")
    # The example spec's `subject: concelier-migration-runner` is the document's name.
    assert info.describes("concelier-migration-runner")
    assert info.summary.licenses == {"AGPL-3.0-or-later": 1, "MIT": 1, "PostgreSQL": 1}


@pytest.mark.parametrize(
    ("name", "json_path", "problem"),
    [
        (
            "cyclonedx-1.6-hash-not-hex.cdx.json",
            "$.components[2].hashes[0].content",
            "'zz' does not match '^([a-fA-F0-9]{32}|",
        ),
        ("cyclonedx-1.6-component-without-name.cdx.json", "$.components[1]", "'name' is a required property"),
        (
            "cyclonedx-1.6-duplicate-bom-ref.cdx.json",
            "$.components[1].bom-ref",
            "bom-ref 'concelier' is already used at $.components[0].components[1]",
        ),
        ("cyclonedx-1.6-duplicate-component.cdx.json", "$.components", "must contain unique items"),
        ("cyclonedx-1.3-unsupported-version.cdx.json", "$.specVersion", "'1.3' is not supported"),
        ("cyclonedx-1.6-xml.cdx.xml", "$", "an XML SBOM is not supported"),
        ("spdx-2.3-package-without-spdxid.spdx.json", "$.packages[1]", "required field SPDXID is missing"),
        ("spdx-2.3-checksum-not-hex.spdx.json", "$.files[0].checksums[0]", "must consist of 40 lowercase hex"),
        (
            "spdx-2.3-relationship-to-missing-element.spdx.json",
            "$.relationships[1]",
            'did not find the referenced spdx_id "SPDXRef-Package-missing"',
        ),
        ("spdx-2.3-broken-license-expression.spdx.json", "$.packages[1]", "AND requires two or more licenses"),
        ("spdx-2.3-checksum-is-a-string.spdx.json", "$.files[0]", "spdx-tools cannot read it; a field has the wrong"),
        ("spdx-2.1-unsupported-version.spdx.json", "$.spdxVersion", "'SPDX-2.1' is not supported"),
        ("neither-format.json", "$", "neither CycloneDX JSON (no bomFormat) nor SPDX JSON (no spdxVersion)"),
        ("not-json.txt", "$", "not valid JSON"),
    ],
)
def test_invalid_sboms_are_refused_with_the_json_path(name: str, json_path: str, problem: str) -> None:
    with pytest.raises(SbomError) as error:
        check_sbom((ASSETS / name).read_bytes(), f"sbom/x/{name}")
    assert error.value.json_path == json_path
    assert error.value.message.startswith(f"sbom/x/{name}: {json_path}: ")
    assert problem in error.value.message
    assert "\n" not in error.value.message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"bomFormat": "CycloneDX", "bomFormat": "CycloneDX", "specVersion": "1.6"}', "duplicate key 'bomFormat'"),
        (b'{"bomFormat": "CycloneDX", "specVersion": NaN}', "non-standard JSON constant NaN"),
        (b"[]", "expected a JSON object (a CycloneDX or SPDX document), got an array"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"bomFormat": "SWID", "specVersion": "1.6"}', "'SWID' is not 'CycloneDX'"),
        (b'{"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"}', "SPDX 3 JSON-LD is not supported"),
        (b"SPDXVersion: SPDX-2.3\nDataLicense: CC0-1.0\n", "SPDX tag-value is not supported"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON arrays and objects"),  # one container per 2 bytes: over the cost
        (b"[" * 5_000 + b"]" * 5_000 + b" " * 200_000, "nested too deeply"),
        (
            b'{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": ['
            + b'{"type": "library", "name": "n", "components": [' * 2000
            + b"]}" * 2000
            + b"]}",
            "nested too deeply",
        ),
    ],
)
def test_malformed_documents_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(SbomError, match="^x.json: ") as error:
        check_sbom(data, "x.json")
    assert problem in error.value.message


def test_a_long_enum_is_not_spelled_out_in_the_message() -> None:
    document = json.loads((ASSETS / "cyclonedx-1.6.cdx.json").read_text())
    document["components"][1]["licenses"] = [{"license": {"id": "Not-A-Licence"}}]
    with pytest.raises(SbomError) as error:
        check_sbom(json.dumps(document).encode(), "x.cdx.json")
    assert re.fullmatch(
        r"x\.cdx\.json: \$\.components\[1\]\.licenses\[0\]\.license\.id: "
        r"'Not-A-Licence' is not one of the \d{3,} values the schema allows",
        error.value.message,
    )


# --- summaries --------------------------------------------------------------------------------------------------


def test_summary_of_a_hand_written_cyclonedx_document() -> None:
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "metadata": {"component": {"type": "application", "name": "not counted"}},
        "components": [
            {
                "type": "library",
                "name": "a",
                "supplier": {"name": "Acme"},
                "licenses": [{"license": {"id": "MIT"}}, {"license": {"id": "MIT"}}],
                "components": [
                    {"type": "library", "name": "a-core", "supplier": {"name": "Acme"}},
                    {"type": "file", "name": "a.conf", "licenses": [{"license": {"name": "Custom"}}]},
                ],
            },
            {"type": "library", "name": "b", "licenses": [{"expression": "MIT OR Apache-2.0"}]},
            {"type": "container", "name": "c", "supplier": {"url": ["https://example.invalid"]}},
        ],
    }
    assert summarize_sbom(document).to_json() == {
        "componentCount": 5,
        "byType": {"container": 1, "file": 1, "library": 3},
        "licenses": {"Custom": 1, "MIT": 1, "MIT OR Apache-2.0": 1},
        "suppliers": {"Acme": 2},
    }


def test_summary_of_a_hand_written_spdx_document() -> None:
    info = check_sbom((ASSETS / "spdx-2.3.spdx.json").read_bytes(), "x.spdx.json")
    assert info.summary.to_json() == {
        "componentCount": 4,
        "byType": {"application": 1, "file": 1, "library": 1, "package": 1},
        # licenseDeclared when it says something, else licenseConcluded; NOASSERTION is not a licence, NONE is.
        "licenses": {"AGPL-3.0-or-later": 1, "BSD-3-Clause OR GPL-2.0-only": 1, "NONE": 1},
        "suppliers": {"StellaOps": 1, "Yann Collet": 1},
    }
    assert info.document_name == "concelier-exporter"


def test_summary_refuses_a_document_of_neither_format() -> None:
    with pytest.raises(SbomError, match=r"^SBOM: \$: neither"):
        summarize_sbom({"name": "x"})


def test_importing_the_module_loads_no_schema_or_validator_library() -> None:
    # `kit --help` and every kit command import this module; the validators are built on first use only.
    code = (
        "import sys, kitbuilder.core.sbom, kitbuilder.core.sbom.cyclonedx as c; "
        "print(sorted(m for m in ('jsonschema', 'jsonschema_rs', 'spdx_tools', 'cyclonedx', 'packageurl') "
        "if m in sys.modules), c._fast_validator.cache_info().currsize)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] 0"
