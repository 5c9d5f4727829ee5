"""The kit's CycloneDX SBOM and the checks of shipped SBOMs: bytes in, documents or located errors out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from kitbuilder.core import checksums
from kitbuilder.core.manifest import FileEntry
from kitbuilder.core.sbom import (
    KIT_SBOM_PATH,
    Inventory,
    KitComponent,
    SbomError,
    SbomImage,
    ShippedSbom,
    check_sbom,
    component_inventories,
    kit_sbom_matches,
    listed_files,
    render_kit_sbom,
    stated_inventories,
    summarize_sbom,
)

ROOT = Path(__file__).resolve().parents[3]
ASSETS = ROOT / "tests" / "assets" / "sbom"
EXAMPLE_SPDX = ROOT / "examples" / "lnm-release" / "sbom" / "migration-runner.spdx.json"
RUNNER = "registry.local/stellaops/migration-runner"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


FILES = (
    FileEntry("migrations/21-101/up.sql", 120, sha("up"), "migration", "21-101"),
    FileEntry("migrations/21-101/revert.sql", 80, sha("revert"), "migration", "21-101"),
    FileEntry("seeds/object-store/rows.ndjson", 4096, sha("rows"), "seed", "object-store"),
    FileEntry("sbom/runner/runner.spdx.json", 2000, sha("spdx"), "sbom", "runner"),
    FileEntry("sbom/worker/worker.cdx.json", 1500, sha("cdx"), "sbom", "worker"),
    FileEntry("docs/operator/RUNBOOK.md", 31, sha("runbook"), "doc", "operator"),
    FileEntry("images/index.json", 400, sha("index"), "image", "kit-images"),
    FileEntry(KIT_SBOM_PATH, 1, sha("itself"), "sbom", "kit-sbom"),
)
COMPONENTS = (
    KitComponent("21-101", "migration", phase="21-101"),
    KitComponent("object-store", "seed"),
    KitComponent("runner", "sbom", subject=RUNNER),
    KitComponent("worker", "sbom", subject="concelier-worker"),
    KitComponent("operator", "doc"),
    KitComponent("empty", "doc"),
    KitComponent("kit-images", "image"),
)


def with_inventories(components: tuple[KitComponent, ...], files: tuple[FileEntry, ...]) -> list[KitComponent]:
    inventories = component_inventories(files)
    return [dataclasses.replace(c, inventory=inventories.get(c.id, Inventory())) for c in components]


def kit_inputs(**changes: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "name": "lnm-release",
        "version": "2025.11.1",
        "product": "concelier",
        "tool_version": "0.1.0",
        "created": "2025-12-01T00:00:00Z",
        "components": with_inventories(COMPONENTS, FILES),
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
        "shipped_sha256": {f.path: f.sha256 for f in FILES},
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


def properties(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


# --- the kit's own SBOM -----------------------------------------------------------------------------------------


def test_kit_sbom_is_byte_identical_for_identical_inputs(kit_sbom: bytes) -> None:
    assert render_kit_sbom(**kit_inputs()) == kit_sbom
    assert kit_sbom.endswith(b"}\n")
    assert json.loads(kit_sbom)["serialNumber"].startswith("urn:uuid:")


def test_serial_number_changes_with_content_and_timestamp_only_when_created(kit_sbom: bytes) -> None:
    changed = (dataclasses.replace(FILES[0], sha256=sha("up v2")), *FILES[1:])
    serial = json.loads(kit_sbom)["serialNumber"]
    assert (
        json.loads(render_kit_sbom(**kit_inputs(components=with_inventories(COMPONENTS, changed))))["serialNumber"]
        != serial
    )
    undated = json.loads(render_kit_sbom(**kit_inputs(created=None)))
    assert "timestamp" not in undated["metadata"]
    assert undated["serialNumber"] != serial
    assert json.loads(kit_sbom)["metadata"]["timestamp"] == "2025-12-01T00:00:00Z"


def test_kit_sbom_passes_cyclonedx_python_lib_strict_1_6_validator(kit_sbom: bytes) -> None:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(kit_sbom.decode()) is None


def test_kit_sbom_shows_the_kit_structure_by_component_not_by_file(kit_sbom: bytes) -> None:
    document = json.loads(kit_sbom)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    subject = document["metadata"]["component"]
    assert (subject["name"], subject["version"], subject["bom-ref"]) == (
        "lnm-release",
        "2025.11.1",
        "kit:lnm-release@2025.11.1",
    )
    assert document["metadata"]["tools"]["components"][0]["name"] == "kitbuilder"
    assert [c["bom-ref"] for c in document["components"]] == [
        *(f"component:{c.id}" for c in COMPONENTS),
        f"image:{RUNNER}:2025.11",
    ]
    refs = by_ref(document)
    assert not any(ref.startswith("file:") for ref in refs)  # no file is listed: SHA256SUMS does that
    migration = refs["component:21-101"]
    assert migration["type"] == "application" and "components" not in migration
    assert properties(migration) == {
        "kitbuilder:role": "migration",
        "kitbuilder:phase": "21-101",
        "kitbuilder:fileCount": "2",
        "kitbuilder:size": "200",
    }
    # The digest of the component's SHA256SUMS lines, in SHA256SUMS order (by path), newlines included.
    lines = f"{sha('revert')}  migrations/21-101/revert.sql\n{sha('up')}  migrations/21-101/up.sql\n"
    assert migration["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(lines.encode()).hexdigest()}]
    assert refs["component:object-store"]["type"] == "data"
    assert properties(refs["component:kit-images"])["kitbuilder:fileCount"] == "1"
    # A component without files states an empty inventory; the kit SBOM is in no inventory.
    assert properties(refs["component:empty"])["kitbuilder:fileCount"] == "0"
    assert refs["component:empty"]["hashes"][0]["content"] == hashlib.sha256(b"").hexdigest()


def test_the_kit_sbom_grows_with_components_not_with_files() -> None:
    many = tuple(FileEntry(f"docs/operator/page-{n:05d}.md", n, sha(str(n)), "doc", "operator") for n in range(5000))
    small = render_kit_sbom(**kit_inputs())
    large = render_kit_sbom(**kit_inputs(components=with_inventories(COMPONENTS, FILES + many)))
    assert len(large) - len(small) < 20  # only the count, size and digest of one component changed


def test_inventories_follow_sha256sums_and_leave_out_the_kit_sbom() -> None:
    inventories = component_inventories(reversed(FILES))  # any order in: SHA256SUMS order is by path
    sums = checksums.render((f.path, f.sha256) for f in FILES)
    for component, inventory in inventories.items():
        paths = {f.path for f in FILES if f.component == component}
        lines = b"".join(line + b"\n" for line in sums.splitlines() if line.split(b"  ", 1)[1].decode() in paths)
        assert inventory == Inventory(
            files=len(paths),
            bytes=sum(f.size for f in FILES if f.component == component),
            sha256=hashlib.sha256(lines).hexdigest(),
        )
    assert "kit-sbom" not in inventories and "empty" not in inventories


def test_kit_sbom_matches_exactly_the_signed_files(kit_sbom: bytes) -> None:
    document = json.loads(kit_sbom)
    ids = [c.id for c in COMPONENTS] + ["kit-sbom"]
    assert kit_sbom_matches(document, ids, FILES)
    assert stated_inventories(document)["21-101"] == component_inventories(FILES)["21-101"]
    # One byte of one file, one file more or less, a file moved to another component, a component more: no match.
    changed = (dataclasses.replace(FILES[0], sha256=sha("other")), *FILES[1:])
    extra = (*FILES, FileEntry("docs/operator/extra.md", 0, sha(""), "doc", "operator"))
    moved = (dataclasses.replace(FILES[0], component="object-store"), *FILES[1:])
    bigger = (dataclasses.replace(FILES[0], size=121), *FILES[1:])
    stray = (*FILES, FileEntry("docs/ghost/x.md", 1, sha("x"), "doc", "ghost"))
    for files in (changed, extra, FILES[1:], moved, bigger, stray):
        assert not kit_sbom_matches(document, ids, files)
    assert not kit_sbom_matches(document, [*ids, "undeclared"], FILES)
    assert not kit_sbom_matches(document, [i for i in ids if i != "empty"], FILES)
    # The kit SBOM's own file, in kit-sbom, is in no inventory: its digest cannot be inside it.
    itself = (*FILES[:-1], dataclasses.replace(FILES[-1], sha256=sha("changed")))
    assert kit_sbom_matches(document, ids, itself)


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda c: c.pop("hashes"), "no hash"),
        (lambda c: c["hashes"].append({"alg": "SHA-512", "content": "0" * 128}), "two hashes"),
        (lambda c: c["hashes"][0].update(alg="SHA-1"), "another algorithm"),
        (lambda c: c["properties"].append({"name": "kitbuilder:fileCount", "value": "2"}), "count stated twice"),
        (lambda c: c["properties"].pop(), "no size"),
        (lambda c: c["properties"][-2].update(value="02"), "count not canonical"),
        (lambda c: c["properties"][-2].update(value="-1"), "negative count"),
    ],
)
def test_a_kit_sbom_stating_a_malformed_inventory_matches_nothing(
    kit_sbom: bytes, mutate: Callable[[dict[str, Any]], Any], what: str
) -> None:
    document = json.loads(kit_sbom)
    mutate(document["components"][0])
    assert stated_inventories(document)["21-101"] is None, what
    assert not kit_sbom_matches(document, [c.id for c in COMPONENTS], FILES), what


def test_a_kit_sbom_stating_one_component_twice_matches_nothing(kit_sbom: bytes) -> None:
    document = json.loads(kit_sbom)
    document["components"].append(document["components"][0])
    assert not kit_sbom_matches(document, [c.id for c in COMPONENTS], FILES)


def test_a_kit_sbom_from_before_inventories_is_compared_file_by_file() -> None:
    """Kits built before inventories nest one ``file`` component per file; inspect still checks those."""
    legacy = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "components": [
            {
                "bom-ref": "component:21-101",
                "type": "application",
                "name": "21-101",
                "components": [
                    {
                        "bom-ref": f"file:{f.path}",
                        "type": "file",
                        "name": f.path,
                        "hashes": [{"alg": "SHA-256", "content": f.sha256}],
                    }
                    for f in FILES[:-1]
                ],
            }
        ],
    }
    assert listed_files(legacy) == {f.path: f.sha256 for f in FILES[:-1]}
    assert kit_sbom_matches(legacy, [c.id for c in COMPONENTS], FILES)
    assert not kit_sbom_matches(legacy, [c.id for c in COMPONENTS], FILES[1:])


def test_kit_sbom_checks_and_summarises_as_a_shipped_one(kit_sbom: bytes) -> None:
    info = check_sbom(kit_sbom, KIT_SBOM_PATH)
    assert (info.format, info.spec_version, info.subject_name, info.subject_version) == (
        "CycloneDX",
        "1.6",
        "lnm-release",
        "2025.11.1",
    )
    assert info.summary.to_json() == {
        "componentCount": 8,
        "byType": {"application": 1, "container": 1, "data": 6},
        "licenses": {},
        "suppliers": {},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"components": [KitComponent("a", "doc", inventory=Inventory(1, 1, "ZZ"))]},
            "sbom/kit.cdx.json: component:a: sha256 'ZZ' is not 64 lowercase hex digits",
        ),
        (
            {"components": [KitComponent("a", "doc", inventory=Inventory(-1, 1, sha("")))], "shipped": []},
            "component:a: a file count or size below 0",
        ),
        (
            {"images": [SbomImage("a:1", "sha512:" + "0" * 128, "m", (), 1)]},
            "image:a:1: digest 'sha512:",
        ),
        (
            {"shipped": [ShippedSbom("sbom/x/missing.spdx.json", "x", "x", "SPDX", "2.3")]},
            "file:sbom/x/missing.spdx.json: a shipped SBOM must be one of the kit's files",
        ),
        (
            {"shipped_sha256": {"sbom/runner/runner.spdx.json": "zz", "sbom/worker/worker.cdx.json": sha("cdx")}},
            "file:sbom/runner/runner.spdx.json: sha256 'zz' is not 64 lowercase hex digits",
        ),
        (
            {"shipped": [ShippedSbom("sbom/runner/runner.spdx.json", "nowhere", "nothing", "SPDX", "2.3")]},
            "file:sbom/runner/runner.spdx.json: its component 'nowhere' is not a kit component",
        ),
        ({"components": [KitComponent("a", "doc"), KitComponent("a", "seed")]}, "component:a: two kit components"),
        ({"created": "1 Dec 2025"}, "$.metadata.timestamp: '1 Dec 2025' is not a 'date-time'"),
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
