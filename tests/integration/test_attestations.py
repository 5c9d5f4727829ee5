"""Issue 3 end to end: SBOM, SLSA provenance (inside and beside the kit), Sigstore bundles, auditor commands."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from kitbuilder.core import jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.manifest import Manifest
from kitbuilder.core.provenance import PROVENANCE_MEMBER, PROVENANCE_PREDICATE_TYPE, builder_from_environment
from kitbuilder.core.statement import Statement, Subject
from kitbuilder.ops.trust_inputs import load_private
from kitbuilder.trust.signatures import sign_envelope
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.keys import ed25519_key
from tests.factories.kits import kit_members, rewrite_kit

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _build(kit_env: KitEnv, out: Path, *extra: Any) -> dict[str, Any]:
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, "--json", *extra, env=SDE)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _rewrite(kit: Path, out: Path, replace: dict[str, bytes]) -> None:
    """The same kit with metadata members replaced or added (same compression, so payload frames are identical)."""
    build = Manifest.from_bytes(kit_members(kit)["manifest.json"]).build
    rewrite_kit(kit, out, replace, level=build.compression.level)


def _sslib_key(pub: Path) -> SSlibKey:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from kitbuilder.trust.keys import PublicKey

    public = PublicKey.from_pem(pub.read_bytes(), what=str(pub))
    return SSlibKey.from_crypto(load_pem_public_key(pub.read_bytes()), keyid=public.keyid)


def test_provenance_inside_and_beside_the_kit_verifies(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    built = _build(kit_env, kit)
    detached = Path(built["provenance"])
    assert detached == kit.with_name(kit.name + ".intoto.jsonl") and detached.is_file()
    assert built["metadata"] == [PROVENANCE_MEMBER]
    code, report = run_json("verify", kit, "--key", kit_env.ed_pub, "--require-provenance", "--attestation", detached)
    assert code == 0, report
    inside, beside = report["attestations"]
    assert inside["path"] == PROVENANCE_MEMBER and inside["predicateType"] == PROVENANCE_PREDICATE_TYPE
    assert inside["subjects"] == ["manifest.json", "SHA256SUMS"] and not inside["detached"]
    assert beside["detached"] and beside["subjects"] == [kit.name]
    # The detached statement names the kit file by the digest verify computed from its single read.
    line = json.loads(detached.read_text().splitlines()[0])
    statement = json.loads(base64.b64decode(line["payload"]))
    assert statement["subject"][0]["digest"]["sha256"] == report["kit"]["sha256"]


def test_provenance_names_spec_inputs_builder_and_reproducible_times(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    _build(kit_env, kit, "--builder-id", "https://ci.example/runner/7")
    code, report = run_json("inspect", kit, "--key", kit_env.ed_pub, "--provenance")
    assert code == 0
    provenance = report["provenance"]
    assert provenance["verified"] and provenance["builderId"] == "https://ci.example/runner/7"
    assert provenance["subjectsMatch"] is True
    assert provenance["spec"] == {"path": "kit.yaml", "sha256": hashlib.sha256(kit_env.spec.read_bytes()).hexdigest()}
    assert provenance["startedOn"] == provenance["finishedOn"] == "2023-11-14T22:13:20Z"
    # One input per spec component, not per file: its source and the digest of its lines of SHA256SUMS.
    assert [(i["name"], i["uri"]) for i in provenance["inputs"]] == [
        ("21-101-shard-index", "file:src/migrations/21-101"),
        ("object-store", "file:src/seeds"),
        ("operator", "file:src/docs"),
    ]
    members = kit_members(kit)
    sums = members["SHA256SUMS"].decode().splitlines(keepends=True)
    for item, directory in zip(provenance["inputs"], ("migrations", "seeds", "docs"), strict=True):
        lines = "".join(line for line in sums if line.split("  ", 1)[1].startswith(f"{directory}/{item['name']}/"))
        assert item["digest"] == {"sha256": hashlib.sha256(lines.encode()).hexdigest()}
    # Same spec, same SOURCE_DATE_EPOCH: the whole kit, provenance and SBOM included, is byte-identical.
    again = kit_env.root / "again.kit.tar.zst"
    _build(kit_env, again, "--builder-id", "https://ci.example/runner/7")
    assert again.read_bytes() == kit.read_bytes()


def test_builder_id_comes_from_the_ci_environment() -> None:
    github = builder_from_environment(
        None,
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "acme/kits",
            "GITHUB_WORKFLOW_REF": "acme/kits/.github/workflows/release.yml@refs/tags/v1",
            "GITHUB_RUN_ID": "42",
            "GITHUB_TOKEN": "secret",
        },
    )
    assert github.id == "https://github.com/acme/kits/.github/workflows/release.yml@refs/tags/v1"
    assert github.invocation_id == "https://github.com/acme/kits/actions/runs/42/attempts/1"
    assert "secret" not in json.dumps(github.ci)
    gitlab = builder_from_environment(
        None,
        {"GITLAB_CI": "true", "CI_SERVER_URL": "https://gl.example", "CI_PROJECT_PATH": "a/b", "CI_RUNNER_ID": "9"},
    )
    assert gitlab.id == "https://gl.example/a/b/-/runners/9"
    assert builder_from_environment("urn:mine", {"GITLAB_CI": "true"}).id == "urn:mine"


def test_require_provenance_refuses_a_kit_without_one(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    built = _build(kit_env, kit, "--no-provenance")
    assert built["provenance"] is None and not kit.with_name(kit.name + ".intoto.jsonl").exists()
    assert run_kit("verify", kit, "--key", kit_env.ed_pub).exit_code == 0
    result = run_kit("verify", kit, "--key", kit_env.ed_pub, "--require-provenance")
    assert result.exit_code == 6
    assert "carries no attestations/provenance.dsse.json" in result.stderr and "Traceback" not in result.output


def test_detached_provenance_of_another_kit_is_refused(kit_env: KitEnv) -> None:
    kit, other = kit_env.kit(), kit_env.root / "other.kit.tar.zst"
    _build(kit_env, kit)
    _build(kit_env, other, "--level", "5")
    result = run_kit("verify", kit, "--key", kit_env.ed_pub, "--attestation", f"{other}.intoto.jsonl")
    assert result.exit_code == 4
    assert "which is not this kit file's" in result.stderr


def test_attestation_signed_by_an_untrusted_key_is_refused(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    _build(kit_env, kit)
    members = kit_members(kit)
    envelope = json.loads(members[PROVENANCE_MEMBER])
    forged = sign_envelope(IN_TOTO_PAYLOAD_TYPE, base64.b64decode(envelope["payload"]), [ed25519_key("stranger")])
    tampered = kit_env.root / "tampered.kit.tar.zst"
    _rewrite(kit, tampered, {PROVENANCE_MEMBER: forged.to_bytes()})
    result = run_kit("verify", tampered, "--key", kit_env.ed_pub)
    assert result.exit_code == 3
    assert result.stderr.startswith("kit: trust error: attestations/provenance.dsse.json")


def test_attestation_whose_subject_digest_does_not_match_is_refused(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    _build(kit_env, kit)
    members = kit_members(kit)
    statement = Statement.from_bytes(
        base64.b64decode(json.loads(members[PROVENANCE_MEMBER])["payload"]), what="provenance"
    )
    wrong = Statement(
        subjects=(Subject("manifest.json", "0" * 64), statement.subjects[1]),
        predicate_type=statement.predicate_type,
        predicate=statement.predicate,
    )
    key = load_private(kit_env.ed_key)
    signed = sign_envelope(IN_TOTO_PAYLOAD_TYPE, wrong.to_bytes(), [key])
    tampered = kit_env.root / "tampered.kit.tar.zst"
    _rewrite(kit, tampered, {PROVENANCE_MEMBER: signed.to_bytes()})
    result = run_kit("verify", tampered, "--key", kit_env.ed_pub)
    assert result.exit_code == 4
    assert "subject manifest.json digest does not match" in result.stderr


def test_provenance_envelopes_check_out_with_securesystemslib_and_in_toto(kit_env: KitEnv) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement as InTotoStatement

    kit = kit_env.kit()
    _build(kit_env, kit)
    inside = json.loads(kit_members(kit)[PROVENANCE_MEMBER])
    beside = json.loads(Path(f"{kit}.intoto.jsonl").read_text())
    for document in (inside, beside):
        SslibEnvelope.from_dict(document).verify([_sslib_key(kit_env.ed_pub)], 1)
        parsed = json_format.Parse(base64.b64decode(document["payload"]), statement_pb2.Statement())
        InTotoStatement.copy_from_pb(parsed).validate()
        assert parsed.predicate_type == "https://slsa.dev/provenance/v1"
        assert parsed.predicate["buildDefinition"]["buildType"].startswith("https://kitbuilder.dev/")


def test_kit_sbom_is_extracted_and_passes_the_official_cyclonedx_schema(kit_env: KitEnv, tmp_path: Path) -> None:
    kit = kit_env.kit()
    _build(kit_env, kit)
    out = tmp_path / "kit.cdx.json"
    code, document = run_json("sbom", kit, "--key", kit_env.ed_pub, "-o", out)
    assert code == 0 and document["verified"] and document["path"] == "sbom/kit.cdx.json"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == document["sha256"]
    bom = json.loads(out.read_text())
    assert bom["specVersion"] == "1.6" and bom["metadata"]["component"]["name"] == "demo-kit"
    validators = pytest.importorskip("cyclonedx.validation.json")
    from cyclonedx.schema import SchemaVersion

    assert validators.JsonStrictValidator(SchemaVersion.V1_6).validate_str(out.read_text()) is None
    # Without keys the digest is still checked, and the user is told the signatures were not.
    unverified = run_kit("sbom", kit)
    assert unverified.exit_code == 0 and "signatures not verified" in unverified.stderr
    assert json.loads(unverified.stdout) == bom


def test_inspect_sbom_counts_components_and_lists_shipped_sboms(kit_env: KitEnv, tmp_path: Path) -> None:
    spdx = Path(__file__).parents[2] / "examples/lnm-release/sbom/migration-runner.spdx.json"
    spec = (
        kit_env.spec.read_text() + f"sboms:\n  - id: runner-sbom\n    source: {spdx}\n    subject: migration-runner\n"
    )
    kit_env.spec.write_text(spec)
    kit = kit_env.kit()
    _build(kit_env, kit)
    code, report = run_json("inspect", kit, "--key", kit_env.ed_pub, "--sbom")
    assert code == 0
    section = report["sbom"]
    (shipped,) = section["shipped"]
    assert {k: shipped[k] for k in ("path", "component", "subject", "format", "specVersion")} == {
        "path": "sbom/runner-sbom/migration-runner.spdx.json",
        "component": "runner-sbom",
        "subject": "migration-runner",
        "format": "SPDX",
        "specVersion": "2.3",
    }
    # The shipped SBOM's own contents are summarised: that is where licences and suppliers are.
    assert shipped["describes"] == {"name": "StellaOps.Concelier.MigrationRunner", "version": "2025.11.1"}
    assert shipped["licenses"] == {"AGPL-3.0-or-later": 1, "MIT": 1, "PostgreSQL": 1}
    # One component per kit component (kit-sbom aside): their inventories are what the manifest's files give.
    assert section["kitSbom"]["byType"] == {"application": 1, "data": 3}
    assert section["kitSbom"]["matchesManifest"] is True
    extracted = run_kit(
        "sbom", kit, "--key", kit_env.ed_pub, "--subject", "migration-runner", "-o", tmp_path / "r.json"
    )
    assert extracted.exit_code == 0
    assert (tmp_path / "r.json").read_bytes() == spdx.read_bytes()
    parse = subprocess.run(["pyspdxtools", "-i", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert parse.returncode == 0, parse.stdout + parse.stderr


def test_invalid_shipped_sbom_is_refused_with_its_json_path(kit_env: KitEnv) -> None:
    bad = kit_env.root / "bad.cdx.json"
    bad.write_text(
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "version": 1,
                "components": [{"type": "library", "name": "x", "hashes": [{"alg": "SHA-256", "content": "zz"}]}],
            }
        )
    )
    kit_env.spec.write_text(kit_env.spec.read_text() + f"sboms:\n  - id: bad\n    source: {bad}\n    subject: x\n")
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit_env.kit())
    assert result.exit_code == 2
    assert "$.components[0].hashes[0].content" in result.stderr and str(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not kit_env.kit().exists()


def test_sigstore_key_bundle_is_stored_and_checked(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    built = _build(kit_env, kit, "--sigstore-bundle")
    assert built["metadata"] == [PROVENANCE_MEMBER, "SHA256SUMS.sigstore.json"]
    code, report = run_json("verify", kit, "--key", kit_env.ed_pub)
    assert code == 0 and report["sigstore"]["kind"] == "key"
    bundle = jsonio.load_object(kit_members(kit)["SHA256SUMS.sigstore.json"], what="bundle")
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == report["signers"][0]
    # A stranger's signature under the trusted key's hint does not pass.
    stranger = ed25519_key("stranger")
    sums = kit_members(kit)["SHA256SUMS"]
    bundle["messageSignature"]["signature"] = base64.b64encode(stranger.sign(sums)).decode()
    tampered = kit_env.root / "tampered.kit.tar.zst"
    _rewrite(kit, tampered, {"SHA256SUMS.sigstore.json": jsonio.dump_pretty(bundle)})
    assert run_kit("verify", tampered, "--key", kit_env.ed_pub).exit_code == 3


def test_keyless_bundle_over_sha256sums_verifies_offline(kit_env: KitEnv, tmp_path: Path) -> None:
    from tests.factories.sigstore_testroot import PrivateSigstore

    kit = kit_env.kit()
    _build(kit_env, kit)
    sigstore = PrivateSigstore("release-ci")
    identity = "https://github.com/acme/kits/.github/workflows/release.yml@refs/tags/v1"
    issuer = "https://token.actions.githubusercontent.com"
    bundle, root = tmp_path / "SHA256SUMS.sigstore.json", tmp_path / "trusted_root.json"
    bundle.write_bytes(sigstore.sign_keyless(kit_members(kit)["SHA256SUMS"], identity=identity, issuer=issuer).bundle)
    root.write_bytes(sigstore.trusted_root())
    keyless = ("--sigstore-bundle", bundle, "--trusted-root", root, "--cert-oidc-issuer", issuer)
    code, report = run_json("verify", kit, "--key", kit_env.ed_pub, *keyless, "--cert-identity", identity)
    assert code == 0, report
    assert report["sigstore"]["kind"] == "keyless" and report["sigstore"]["identity"] == identity
    wrong = run_kit("verify", kit, "--key", kit_env.ed_pub, *keyless, "--cert-identity", "mallory@example.com")
    assert wrong.exit_code == 3
    partial = run_kit("verify", kit, "--key", kit_env.ed_pub, "--sigstore-bundle", bundle)
    assert partial.exit_code == 2 and "--trusted-root" in partial.stderr
    # The bundle signs another kit's SHA256SUMS: refused.
    other = kit_env.root / "other.kit.tar.zst"
    (kit_env.root / "src/docs/NEW.md").write_text("new\n")
    _build(kit_env, other)
    assert run_kit("verify", other, "--key", kit_env.ed_pub, *keyless, "--cert-identity", identity).exit_code == 3


def test_more_than_sixteen_attestations_are_refused(kit_env: KitEnv) -> None:
    kit = kit_env.kit()
    _build(kit_env, kit)
    provenance = kit_members(kit)[PROVENANCE_MEMBER]
    extra = {f"attestations/copy-{n:02d}.dsse.json": provenance for n in range(16)}
    crowded = kit_env.root / "crowded.kit.tar.zst"
    _rewrite(kit, crowded, extra)
    result = run_kit("verify", crowded, "--key", kit_env.ed_pub)
    assert result.exit_code == 5 and "kit index lists 17 attestations; at most 16 are allowed" in result.stderr
    # Sixteen, each a valid copy of the provenance, is within the cap and verifies.
    fine = kit_env.root / "fine.kit.tar.zst"
    _rewrite(kit, fine, dict(list(extra.items())[:15]))
    code, report = run_json("verify", fine, "--key", kit_env.ed_pub)
    assert code == 0 and len(report["attestations"]) == 16
