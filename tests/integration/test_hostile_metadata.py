"""Hostile kits against the new metadata paths: attestations, Sigstore bundles, detached provenance, SBOMs.

Two attackers. A *non-signer* holds no trusted key: they may add, drop or rewrite the
unsigned parts of a kit (optional metadata members, envelope signatures, the index) or
forge a whole kit under their own key and hope `kit inspect`/`kit sbom` (which run
without keys) trip over it. A *hostile signer* is a compromised pipeline: the kit is
validly signed by the trusted key, but what it signed is malicious. Kits are crafted
with kitbuilder's own writer and `seal` (the same code `kit build` uses), so a refusal
comes from the rule under test, never from a broken signature.

Every refusal must be one line on stderr, naming the member or field, with the
documented exit code (docs/exit-codes.md), no traceback and nothing written.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core import schemas
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    SIGSTORE_BUNDLE,
    Component,
    KitInfo,
)
from kitbuilder.core.provenance import PROVENANCE_MEMBER, PROVENANCE_PREDICATE_TYPE
from kitbuilder.core.sbom import KIT_SBOM_PATH
from kitbuilder.core.statement import Statement, Subject
from kitbuilder.ops.build import Sealed, seal
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope
from kitbuilder.trust.sigstore_bundle import render_key_bundle
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.hostile import RELEASE, STRANGER
from tests.factories.keys import write_pair
from tests.factories.kits import TEST_BUILD, CraftedManifest, write_payload
from tests.factories.kits import kit_members as members
from tests.factories.kits import rewrite_kit as rewrite

MiB = 1 << 20
KINDS = {2: ("usage", "spec"), 3: ("trust",), 4: ("integrity",), 5: ("archive", "format"), 6: ("policy",)}
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
# A newline and an OSC "set terminal title" sequence (click strips CSI colour codes off a pipe, not these),
# short enough to survive the 16-character cut key ids get in messages.
INJECTION = "\n\x1b]0;ok\x07kit: OK"
# Peak Python allocation allowed while refusing a kit whose hostile parts decompress to far more than this.
MEMORY_BOUND = 32 * MiB
PAD_JSON = b" " * (4 * MiB - 2) + b"{}"  # 4 MiB of JSON that is only whitespace: compresses to a few hundred bytes
GOOD_PREDICATE: dict[str, Any] = {
    "buildDefinition": {"buildType": "https://kitbuilder.dev/build/kit/v1", "externalParameters": {}},
    "runDetails": {"builder": {"id": "https://ci.example/builder"}},
}

Extra = Mapping[str, bytes] | Callable[[Sealed], Mapping[str, bytes]]


# ---------------------------------------------------------------------------------------------------------------
# crafting signed kits with kitbuilder's own writer

_ROLES = {"images/": ("image", "kit-images"), "sbom/": ("sbom", "kit-sbom")}


def craft_kit(
    out: Path,
    files: Mapping[str, bytes],
    *,
    images: Sequence[dict[str, Any]] = (),
    sboms: Sequence[dict[str, Any]] = (),
    extra: Extra | None = None,
    signer: PrivateKey = RELEASE,
) -> Path:
    """A kit holding ``files`` whose manifest (with ``images``/``sboms`` records as given) ``signer`` signs.

    ``extra`` are optional metadata members written after the signed ones (attestations, a Sigstore
    bundle), or a function of what was sealed that returns them.
    """
    with out.open("wb") as sink:
        writer = KitWriter2(sink, level=3)
        entries, frames = write_payload(
            writer,
            (
                (path, data, *next((v for k, v in _ROLES.items() if path.startswith(k)), ("doc", "docs")))
                for path, data in files.items()
            ),
        )
        # The records go into the signed JSON as given: some are hostile on purpose.
        records = {name: list(items) for name, items in (("images", images), ("sboms", sboms)) if items}
        manifest = CraftedManifest(
            kit=KitInfo("hostile-kit", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
            build=TEST_BUILD,
            components=(Component("docs", "doc"), Component("kit-sbom", "sbom"), Component("kit-images", "image")),
            files=entries,
            frames=frames,
            format_version=2,
            replace=records,
        )
        sealed = seal(writer, manifest, [signer])
        for name, data in (extra(sealed) if callable(extra) else extra or {}).items():
            writer.add_metadata(name, data)
        writer.finish()
    return out


def metadata_subjects(sealed: Sealed) -> list[tuple[str, str]]:
    """The subjects kit build gives its provenance: the kit's manifest.json and SHA256SUMS."""
    return [(MANIFEST_JSON, sealed.manifest_sha256), (SHA256SUMS, sealed.sums_sha256)]


def attestation(
    subjects: Sequence[tuple[str, str]],
    predicate: dict[str, Any],
    *,
    predicate_type: str = PROVENANCE_PREDICATE_TYPE,
    signer: PrivateKey = RELEASE,
) -> bytes:
    statement = Statement(tuple(Subject(n, d) for n, d in subjects), predicate_type, predicate)
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), [signer]).to_bytes()


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    """The trusted key (the one craft_kit signs with by default)."""
    (tmp_path / "keys").mkdir()
    return write_pair(RELEASE, tmp_path / "keys" / "release")[1]


def assert_refused(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, one clean line on stderr of the documented kind naming ``words``, no traceback."""
    stderr = result.stderr
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output and "internal error" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert not CONTROL.search(stderr[:-1]), f"control characters in the error: {stderr!r}"
    kind = re.match(r"kit: (\w+) error: ", stderr)
    assert kind is not None and kind.group(1) in KINDS[code], stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"
    return stderr


def assert_nothing_recorded() -> None:
    """A refused kit leaves no anti-rollback state (conftest gives every test its own KIT_STATE_DIR)."""
    assert list(Path(os.environ["KIT_STATE_DIR"]).iterdir()) == []


def peak_allocation(call: Callable[[], Result]) -> tuple[Result, int]:
    """Run ``call`` and return its result with the peak of Python allocations while it ran (bytes)."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


DOCS = {"docs/a.md": b"# Runbook\n\nVerify, then apply.\n"}


# ---------------------------------------------------------------------------------------------------------------
# attestations: hostile signer


def test_attestation_with_ten_thousand_subjects_is_checked_to_the_last(tmp_path: Path, pub: Path) -> None:
    """10,000 subjects: all matching verifies in one linear pass; one foreign name at the very end is still caught."""
    honest = craft_kit(
        tmp_path / "honest.kit.tar.zst",
        DOCS,
        extra=lambda s: {"attestations/many.dsse.json": attestation(metadata_subjects(s) * 5000, GOOD_PREDICATE)},
    )
    code, report = run_json("verify", honest, "--key", pub)
    assert code == 0 and len(report["attestations"][0]["subjects"]) == 10_000
    hidden = craft_kit(
        tmp_path / "hidden.kit.tar.zst",
        DOCS,
        extra=lambda s: {
            "attestations/many.dsse.json": attestation(
                metadata_subjects(s) * 4999 + [("docs/a.md", "0" * 64), ("docs/ghost.md", "0" * 64)], GOOD_PREDICATE
            )
        },
    )
    assert_refused(run_kit("verify", hidden, "--key", pub), 4, "attestations/many.dsse.json", "docs/a.md")


BAD_PREDICATES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "build_definition_is_a_list": (lambda p: p.update(buildDefinition=[]), "predicate.buildDefinition"),
    "build_type_is_a_number": (lambda p: p["buildDefinition"].update(buildType=1), "buildDefinition.buildType"),
    "external_parameters_is_a_list": (
        lambda p: p["buildDefinition"].update(externalParameters=[]),
        "buildDefinition.externalParameters",
    ),
    "run_details_is_a_string": (lambda p: p.update(runDetails="github"), "predicate.runDetails"),
    "builder_id_is_null": (lambda p: p["runDetails"]["builder"].update(id=None), "runDetails.builder.id"),
    "dependencies_is_an_object": (
        lambda p: p["buildDefinition"].update(resolvedDependencies={"a": 1}),
        "resolvedDependencies",
    ),
    "dependency_digest_is_a_number": (
        lambda p: p["buildDefinition"].update(resolvedDependencies=[{"name": "x", "digest": {"sha256": 5}}]),
        "resolvedDependencies[0]",
    ),
    "dependency_is_a_string": (
        lambda p: p["buildDefinition"].update(resolvedDependencies=["docs/a.md"]),
        "resolvedDependencies[0]",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_PREDICATES))
def test_provenance_predicate_with_a_wrong_type_is_refused(name: str, tmp_path: Path, pub: Path) -> None:
    """A validly signed SLSA predicate whose field has the wrong JSON type: verify and inspect both say which."""
    change, field = BAD_PREDICATES[name]
    predicate = json.loads(json.dumps(GOOD_PREDICATE))
    change(predicate)
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {PROVENANCE_MEMBER: attestation(metadata_subjects(s), predicate)},
    )
    assert_refused(run_kit("verify", kit, "--key", pub), 5, PROVENANCE_MEMBER, field)
    assert_nothing_recorded()
    assert_refused(run_kit("inspect", kit, "--provenance"), 5, PROVENANCE_MEMBER, field)


def test_attestation_predicate_500_levels_deep_is_refused(tmp_path: Path, pub: Path) -> None:
    deep: dict[str, Any] = json.loads('{"a":' * 500 + "1" + "}" * 500)
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {
            "attestations/deep.dsse.json": attestation(
                metadata_subjects(s), deep, predicate_type="https://example.com/deep/v1"
            )
        },
    )
    assert_refused(run_kit("verify", kit, "--key", pub), 5, "attestations/deep.dsse.json", "in-toto Statement")
    # inspect reads only the provenance member's predicate; the deep one is listed, not parsed.
    inspected = run_kit("inspect", kit, "--provenance")
    assert inspected.exit_code == 0 and "attestations/deep.dsse.json" in inspected.stdout


# ---------------------------------------------------------------------------------------------------------------
# attestations and Sigstore bundle: non-signer


def test_unsigned_file_under_attestations_with_another_name_is_an_unlisted_member(tmp_path: Path, pub: Path) -> None:
    """`attestations/Run.sh` is no attestation name: a member after the payload that is not metadata, refused where
    the index lists it (format 2 lists metadata members only; payload files are placed by the signed list)."""
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS, extra={"attestations/Run.sh": b"#!/bin/sh\nrm -rf /\n"})
    assert_refused(run_kit("verify", kit, "--key", pub), 5, "attestations/Run.sh", "not a metadata member")


def test_sigstore_bundle_swapped_for_a_keyless_one_is_refused(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst", DOCS, extra=lambda s: {SIGSTORE_BUNDLE: render_key_bundle(s.sums, RELEASE)}
    )
    bundle = json.loads(members(kit)[SIGSTORE_BUNDLE])
    bundle["verificationMaterial"] = {"certificate": {"rawBytes": base64.b64encode(b"not a cert").decode()}}
    swapped = rewrite(kit, tmp_path / "swapped.kit.tar.zst", {SIGSTORE_BUNDLE: json.dumps(bundle).encode()})
    assert_refused(run_kit("verify", swapped, "--key", pub), 5, SIGSTORE_BUNDLE, "certificate")
    assert_nothing_recorded()


def test_junk_first_signature_cannot_switch_off_the_sha256sums_signature_checks(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    built = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit, "--sigstore-bundle")
    assert built.exit_code == 0, built.output
    found = members(kit)
    envelope = json.loads(found[MANIFEST_DSSE])
    envelope["signatures"].insert(0, {"keyid": STRANGER.keyid, "sig": base64.b64encode(b"junk").decode()})
    forged = rewrite(
        kit,
        kit_env.root / "forged.kit.tar.zst",
        {
            MANIFEST_DSSE: json.dumps(envelope).encode(),
            SHA256SUMS_SIG: STRANGER.sign(found[SHA256SUMS]),
            SIGSTORE_BUNDLE: render_key_bundle(found[SHA256SUMS], STRANGER),
        },
    )
    assert_refused(run_kit("verify", forged, "--key", kit_env.ed_pub), 3)
    assert_nothing_recorded()


def test_untrusted_attestation_cannot_write_lines_into_the_error(tmp_path: Path, pub: Path) -> None:
    def forged(sealed: Sealed) -> dict[str, bytes]:
        envelope = json.loads(attestation(metadata_subjects(sealed), GOOD_PREDICATE, signer=STRANGER))
        envelope["signatures"][0]["keyid"] = INJECTION
        return {"attestations/forged.dsse.json": json.dumps(envelope).encode()}

    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS, extra=forged)
    assert_refused(run_kit("verify", kit, "--key", pub), 3, "attestations/forged.dsse.json")


def test_sigstore_bundle_hint_cannot_write_lines_into_the_error(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst", DOCS, extra=lambda s: {SIGSTORE_BUNDLE: render_key_bundle(s.sums, RELEASE)}
    )
    found = members(kit)
    bundle = json.loads(found[SIGSTORE_BUNDLE])
    bundle["verificationMaterial"]["publicKey"]["hint"] = INJECTION
    bundle["messageSignature"]["signature"] = base64.b64encode(STRANGER.sign(found[SHA256SUMS])).decode()
    forged = rewrite(kit, tmp_path / "forged.kit.tar.zst", {SIGSTORE_BUNDLE: json.dumps(bundle).encode()})
    assert_refused(run_kit("verify", forged, "--key", pub), 3, SIGSTORE_BUNDLE)


def test_optional_metadata_cannot_make_verify_hold_all_of_it_at_once(tmp_path: Path, pub: Path) -> None:
    padded = {f"attestations/pad-{n:02d}.dsse.json": PAD_JSON for n in range(16)} | {SIGSTORE_BUNDLE: PAD_JSON}
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS, extra=padded)
    assert kit.stat().st_size < 100_000
    verified, peak = peak_allocation(lambda: run_kit("verify", kit, "--key", pub))
    assert_refused(verified, 5)
    assert peak < MEMORY_BOUND, f"verify peaked at {peak >> 20} MiB"
    inspected, peak = peak_allocation(lambda: run_kit("inspect", kit))
    assert inspected.exit_code in (0, 5) and "Traceback" not in inspected.output
    assert peak < MEMORY_BOUND, f"inspect peaked at {peak >> 20} MiB"


# ---------------------------------------------------------------------------------------------------------------
# detached provenance (--attestation FILE)


def test_detached_attestation_file_is_read_within_a_bound(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS)
    huge = tmp_path / "kit.kit.tar.zst.intoto.jsonl"
    with huge.open("wb") as sink:
        sink.truncate(65 * MiB)  # sparse: one 65 MiB line of NULs, costs no disk
    result, peak = peak_allocation(lambda: run_kit("verify", kit, "--key", pub, "--attestation", huge))
    assert_refused(result, 5, str(huge))
    assert peak < MEMORY_BOUND, f"verify peaked at {peak >> 20} MiB reading a 65 MiB attestation file"
    assert_nothing_recorded()


def test_detached_attestation_that_is_a_directory_is_a_usage_error(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS)
    (tmp_path / "dir.intoto.jsonl").mkdir()
    assert_refused(
        run_kit("verify", kit, "--key", pub, "--attestation", tmp_path / "dir.intoto.jsonl"), 2, "dir.intoto"
    )
    assert_nothing_recorded()


# ---------------------------------------------------------------------------------------------------------------
# provenance in `kit inspect`


def test_inspect_provenance_json_keeps_its_schema_whatever_the_predicate_says(tmp_path: Path, pub: Path) -> None:
    predicate = json.loads(json.dumps(GOOD_PREDICATE))
    predicate["runDetails"]["metadata"] = {"startedOn": {"at": 1}, "finishedOn": [1], "invocationId": 5}
    predicate["buildDefinition"]["externalParameters"] = {"spec": {"path": ["kit.yaml"], "digest": {"sha256": 7}}}
    predicate["buildDefinition"]["resolvedDependencies"] = [{"name": {"n": 1}, "uri": [1], "digest": {"sha256": "z"}}]
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {PROVENANCE_MEMBER: attestation(metadata_subjects(s), predicate)},
    )
    result = run_kit("inspect", kit, "--provenance", "--key", pub, "--json")
    if result.exit_code == 0:
        error = schemas.first_error("inspect-report", json.loads(result.stdout))
        assert error is None, f"{schemas.json_path(error)}: {error.message}"
    else:
        assert_refused(result, 5, PROVENANCE_MEMBER)


def test_inspect_provenance_and_verify_agree_on_a_provenance_member_of_another_type(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {
            PROVENANCE_MEMBER: attestation(
                metadata_subjects(s), {"scan": "clean"}, predicate_type="https://example.com/scan/v1"
            )
        },
    )
    verified = run_kit("verify", kit, "--key", pub, "--no-state")
    inspected = run_kit("inspect", kit, "--provenance", "--key", pub)
    assert "Traceback" not in inspected.output
    assert inspected.exit_code == verified.exit_code, f"verify {verified.exit_code}, inspect: {inspected.stderr}"


# ---------------------------------------------------------------------------------------------------------------
# SBOMs: `kit sbom` and `kit inspect --sbom` (both run without keys), shipped SBOMs at build time

GHOST_SBOM = {
    "path": "sbom/runner/ghost.spdx.json",
    "component": "runner-sbom",
    "subject": "runner",
    "format": "SPDX",
    "specVersion": "2.3",
}


def test_kit_sbom_of_a_record_naming_no_file_is_an_integrity_error(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS, sboms=[GHOST_SBOM])
    out = tmp_path / "out.json"
    assert_refused(run_kit("sbom", kit, "--subject", "runner", "-o", out), 4, GHOST_SBOM["path"])
    assert_refused(run_kit("sbom", kit, "--subject", "runner", "--key", pub, "-o", out), 4, GHOST_SBOM["path"])
    assert not out.exists()


def test_verify_refuses_a_manifest_whose_sbom_record_names_no_file(tmp_path: Path, pub: Path) -> None:
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", DOCS, sboms=[GHOST_SBOM])
    assert_refused(run_kit("verify", kit, "--key", pub), 4, GHOST_SBOM["path"])
    assert_nothing_recorded()


CDX = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}
FILE_COMPONENT = {"type": "file", "bom-ref": "file:docs/a.md", "name": "docs/a.md"}
MALFORMED_KIT_SBOMS: dict[str, dict[str, Any]] = {
    "components_is_a_number": {**CDX, "components": 5},
    "hash_is_a_string": {**CDX, "components": [{**FILE_COMPONENT, "hashes": ["zz"]}]},
    "hash_without_content": {**CDX, "components": [{**FILE_COMPONENT, "hashes": [{"alg": "SHA-256"}]}]},
    "file_name_is_a_list": {
        **CDX,
        "components": [{**FILE_COMPONENT, "name": ["docs/a.md"], "hashes": [{"alg": "SHA-256", "content": "0"}]}],
    },
    "spdx_packages_is_a_number": {"spdxVersion": "SPDX-2.3", "packages": 5},
}


@pytest.mark.parametrize("name", sorted(MALFORMED_KIT_SBOMS))
def test_inspect_sbom_of_a_malformed_kit_sbom_is_a_format_error(name: str, tmp_path: Path) -> None:
    sbom = json.dumps(MALFORMED_KIT_SBOMS[name]).encode()
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", {**DOCS, KIT_SBOM_PATH: sbom}, signer=STRANGER)
    assert_refused(run_kit("inspect", kit, "--sbom"), 5, KIT_SBOM_PATH)
    assert_refused(run_kit("inspect", kit, "--sbom", "--json"), 5, KIT_SBOM_PATH)


def test_inspect_sbom_of_a_kit_sbom_500_levels_deep_does_not_crash(tmp_path: Path) -> None:
    # Each nested component is an object in a list: 250 components are 500 levels of JSON.
    component: dict[str, Any] = {"type": "library", "name": "leaf"}
    for level in range(249):
        component = {"type": "library", "name": f"c{level}", "components": [component]}
    sbom = json.dumps({**CDX, "components": [component]}).encode()
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", {**DOCS, KIT_SBOM_PATH: sbom}, signer=STRANGER)
    result = run_kit("inspect", kit, "--sbom", "--json")
    if result.exit_code == 0:  # summarised as it stands, or refused as too deep: either way one clean answer
        section = json.loads(result.stdout)["sbom"]["kitSbom"]
        assert section["componentCount"] == 250 and section["matchesManifest"] is False
    else:
        assert_refused(result, 5, KIT_SBOM_PATH)


def _ship(kit_env: KitEnv, name: str, document: dict[str, Any]) -> Path:
    source = kit_env.root / name
    source.write_text(json.dumps(document))
    kit_env.spec.write_text(
        kit_env.spec.read_text() + f"sboms:\n  - id: runner-sbom\n    source: {source}\n    subject: runner\n"
    )
    return source


def test_shipped_cyclonedx_sbom_500_levels_deep_is_refused_with_its_name(kit_env: KitEnv) -> None:
    deep = json.loads("[" * 500 + "]" * 500)
    document = {**CDX, "metadata": {"component": {"type": "application", "name": "runner", "x-deep": deep}}}
    source = _ship(kit_env, "deep.cdx.json", document)
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit_env.kit())
    assert_refused(result, 2, str(source), "runner-sbom")
    assert not kit_env.kit().exists()


SPDX_TOOLS_TRIPS = {
    "external_refs_are_lists": ("externalRefs", [["purl"]]),
    "checksum_value_is_a_list": ("checksums", [{"algorithm": "SHA256", "checksumValue": ["x"]}]),
}


@pytest.mark.parametrize("name", sorted(SPDX_TOOLS_TRIPS))
def test_shipped_spdx_that_spdx_tools_trips_over_is_refused_with_its_path(name: str, kit_env: KitEnv) -> None:
    document = json.loads((Path(__file__).parents[1] / "assets/sbom/spdx-2.3.spdx.json").read_text())
    field, value = SPDX_TOOLS_TRIPS[name]
    document["packages"][0][field] = value
    source = _ship(kit_env, f"{name}.spdx.json", document)
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit_env.kit())
    assert_refused(result, 2, str(source), "$.packages[0]")
    assert not kit_env.kit().exists()
