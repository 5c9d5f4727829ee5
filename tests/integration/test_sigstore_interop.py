"""Sigstore bundles against verifiers nobody here wrote: npm's @sigstore/verify and sigstore-python.

Key-based bundles from kit are checked by @sigstore/verify with a pinned key. Keyless bundles come from a
private Sigstore instance (tests/factories/sigstore_testroot.py) and are checked offline by
``verify_keyless`` (sigstore-python) and, as a cross-check of that instance, by @sigstore/verify.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.core import checksums
from kitbuilder.errors import FormatError, TrustError, UsageError
from kitbuilder.ops.build import BuildOptions, build_kit
from kitbuilder.ops.trust_inputs import verify_keyless
from kitbuilder.trust.keyless import KeylessResult
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy
from kitbuilder.trust.sigstore_bundle import SIGSTORE_BUNDLE_NAME, render_key_bundle, verify_key_bundle
from tests.factories.cli import KitEnv
from tests.factories.keys import ecdsa_key, ed25519_key
from tests.factories.sigstore_testroot import GITHUB_ISSUER, RELEASE_IDENTITY, SIGNED_AT, PrivateSigstore

NPM_DIR = Path(__file__).resolve().parents[1] / "npm"
SUMS = checksums.render([("migrations/001/up.sql", "ab" * 32), ("docs/runbook.md", "cd" * 32)])


# --- npm @sigstore/verify --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_verifier() -> Path:
    """tests/npm with its pinned packages installed (npm ci once per checkout)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not on PATH: the @sigstore/verify interop checks need them (apt-get install npm)")
    if not (NPM_DIR / "node_modules" / "@sigstore" / "verify").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"npm ci in {NPM_DIR} failed:\n{result.stdout}\n{result.stderr}"
    return NPM_DIR


def run_node(npm_dir: Path, script: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(npm_dir / script), *(str(a) for a in args)], capture_output=True, text=True, check=False
    )


@dataclass
class KeyCase:
    key: PrivateKey
    message: Path
    bundle: Path
    public: Path


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def key_case(request: pytest.FixtureRequest, tmp_path: Path) -> KeyCase:
    key = ed25519_key("release") if request.param == "ed25519" else ecdsa_key("ops")
    message, bundle, public = tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.sigstore.json", tmp_path / "key.pub"
    message.write_bytes(SUMS)
    bundle.write_bytes(render_key_bundle(SUMS, key))
    public.write_bytes(key.public.to_pem())
    return KeyCase(key, message, bundle, public)


def test_npm_verifies_key_bundle_with_pinned_key(node_verifier: Path, key_case: KeyCase) -> None:
    result = run_node(
        node_verifier, "verify-key-bundle.mjs", key_case.message, key_case.bundle, key_case.public, key_case.key.keyid
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("verified:")


def test_npm_refuses_key_bundle_over_modified_message(node_verifier: Path, key_case: KeyCase) -> None:
    key_case.message.write_bytes(SUMS.replace(b"ab", b"ac", 1))
    result = run_node(
        node_verifier, "verify-key-bundle.mjs", key_case.message, key_case.bundle, key_case.public, key_case.key.keyid
    )
    assert result.returncode == 1
    assert "SIGNATURE_ERROR" in result.stderr


def test_npm_refuses_key_bundle_checked_with_wrong_key(node_verifier: Path, key_case: KeyCase, tmp_path: Path) -> None:
    # The stranger's key pinned under the signer's key id: the hint resolves, the signature does not verify.
    stranger = tmp_path / "stranger.pub"
    stranger.write_bytes(ed25519_key("stranger").public.to_pem())
    result = run_node(
        node_verifier, "verify-key-bundle.mjs", key_case.message, key_case.bundle, stranger, key_case.key.keyid
    )
    assert result.returncode == 1
    assert "SIGNATURE_ERROR" in result.stderr


def test_npm_refuses_key_bundle_whose_hint_names_no_pinned_key(node_verifier: Path, key_case: KeyCase) -> None:
    result = run_node(
        node_verifier, "verify-key-bundle.mjs", key_case.message, key_case.bundle, key_case.public, "0" * 64
    )
    assert result.returncode == 1
    assert "PUBLIC_KEY_ERROR" in result.stderr


@pytest.mark.skipif(not (shutil.which("zstd") and shutil.which("tar")), reason="needs zstd and tar on PATH")
@pytest.mark.parametrize("first", ["ed25519", "ecdsa-p256"])
def test_bundle_inside_a_built_kit_verifies_with_npm(
    node_verifier: Path, kit_env: KitEnv, tmp_path: Path, first: str
) -> None:
    keys = [ed25519_key("release"), ecdsa_key("ops")]
    if first == "ecdsa-p256":
        keys.reverse()
    kit = tmp_path / "bundle.kit.tar.zst"
    options = BuildOptions(sigstore_bundle=True, provenance=False, source_date_epoch=1700000000)
    result = build_kit(kit_env.spec, keys=keys, output=kit, options=options, detached_provenance=False)
    assert SIGSTORE_BUNDLE_NAME in result.metadata
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{out}'", shell=True, check=True)
    public = tmp_path / "signer.pub"
    public.write_bytes(keys[0].public.to_pem())
    sums, bundle = out / "SHA256SUMS", out / SIGSTORE_BUNDLE_NAME
    verified = run_node(node_verifier, "verify-key-bundle.mjs", sums, bundle, public, keys[0].keyid)
    assert verified.returncode == 0, verified.stderr
    policy = TrustPolicy(keys=(keys[0].public,), threshold=1)
    signer = verify_key_bundle(sums.read_bytes(), bundle.read_bytes(), policy=policy, what=SIGSTORE_BUNDLE_NAME)
    assert signer == keys[0].keyid


# --- keyless, offline, against a private trusted root -----------------------------------------------------


@dataclass
class Keyless:
    root: PrivateSigstore
    message: Path
    bundle: Path
    trusted_root: Path

    def verify(self, identity: str = RELEASE_IDENTITY, issuer: str = GITHUB_ISSUER) -> KeylessResult:
        return verify_keyless(
            self.message.read_bytes(),
            bundle=self.bundle,
            trusted_root=self.trusted_root,
            identity=identity,
            issuer=issuer,
        )

    def edit_bundle(self, change: Callable[[dict[str, Any]], None]) -> None:
        document = json.loads(self.bundle.read_bytes())
        change(document)
        self.bundle.write_text(json.dumps(document))

    def edit_root(self, change: Callable[[dict[str, Any]], None]) -> None:
        document = json.loads(self.trusted_root.read_bytes())
        change(document)
        self.trusted_root.write_text(json.dumps(document))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a name or open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def keyless(tmp_path: Path, no_network: None) -> Keyless:
    root = PrivateSigstore("alpha")
    signed = root.sign_keyless(SUMS, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    paths = tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.sigstore.json", tmp_path / "trusted_root.json"
    paths[0].write_bytes(SUMS)
    paths[1].write_bytes(signed.bundle)
    paths[2].write_bytes(root.trusted_root())
    return Keyless(root, *paths)


def test_keyless_bundle_verifies_offline_with_right_identity(keyless: Keyless) -> None:
    result = keyless.verify()
    signed = keyless.root.sign_keyless(SUMS, identity=RELEASE_IDENTITY)
    assert result.identity == RELEASE_IDENTITY and result.issuer == GITHUB_ISSUER
    assert result.log_index == signed.log_index == 5
    assert result.integrated_time == "2025-03-01T12:00:05Z" == signed.integrated_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert signed.integrated_time > SIGNED_AT
    assert len(result.certificate_sha256) == 64


def test_email_identity_verifies(keyless: Keyless) -> None:
    signed = keyless.root.sign_keyless(SUMS, identity="release@example.org", issuer="https://accounts.example.org")
    keyless.bundle.write_bytes(signed.bundle)
    assert keyless.verify("release@example.org", "https://accounts.example.org").identity == "release@example.org"


def test_keyless_wrong_identity_is_a_trust_error(keyless: Keyless) -> None:
    with pytest.raises(TrustError, match="SANs do not match") as caught:
        keyless.verify(identity="https://github.com/attacker/fork/.github/workflows/release.yml@refs/heads/main")
    assert caught.value.exit_code == 3
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(keyless.bundle))


def test_keyless_wrong_issuer_is_a_trust_error(keyless: Keyless) -> None:
    with pytest.raises(TrustError, match="OIDCIssuer"):
        keyless.verify(issuer="https://accounts.google.com")


def test_keyless_modified_message_is_a_trust_error(keyless: Keyless) -> None:
    keyless.message.write_bytes(SUMS + b"0" * 64 + b"  extra.bin\n")
    with pytest.raises(TrustError, match="digest mismatch"):
        keyless.verify()


def test_keyless_bundle_from_a_different_root_is_a_trust_error(keyless: Keyless) -> None:
    keyless.bundle.write_bytes(PrivateSigstore("other").sign_keyless(SUMS, identity=RELEASE_IDENTITY).bundle)
    with pytest.raises(TrustError, match="certificate chain"):
        keyless.verify()


def _swap_logs(field: str, donor: PrivateSigstore) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document[field] = json.loads(donor.trusted_root())[field]

    return change


@pytest.mark.parametrize(
    ("defect", "words"),
    [
        ("root_with_other_ct_log", "SCT"),
        ("root_with_other_transparency_log", "log entry"),
    ],
)
def test_keyless_root_trusting_other_logs_is_a_trust_error(keyless: Keyless, defect: str, words: str) -> None:
    field = "ctlogs" if "ct_log" in defect else "tlogs"
    keyless.edit_root(_swap_logs(field, PrivateSigstore("other")))
    with pytest.raises(TrustError, match=words):
        keyless.verify()


def _entry(document: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = document["verificationMaterial"]["tlogEntries"][0]
    return entry


def _flip_b64(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _checkpoint_signature_flipped(document: dict[str, Any]) -> None:
    proof = _entry(document)["inclusionProof"]
    note, signature_line = proof["checkpoint"]["envelope"].split("\n\n")
    dash_name, signature = signature_line.rstrip("\n").rsplit(" ", 1)
    proof["checkpoint"]["envelope"] = f"{note}\n\n{dash_name} {_flip_b64(signature)}\n"


def _proof_hash_flipped(document: dict[str, Any]) -> None:
    hashes = _entry(document)["inclusionProof"]["hashes"]
    hashes[0] = _flip_b64(hashes[0])


def _promise_flipped(document: dict[str, Any]) -> None:
    promise = _entry(document)["inclusionPromise"]
    promise["signedEntryTimestamp"] = _flip_b64(promise["signedEntryTimestamp"])


def _integrated_time_moved(document: dict[str, Any]) -> None:
    _entry(document)["integratedTime"] = str(int(_entry(document)["integratedTime"]) + 60)


def _signature_of_other_message(document: dict[str, Any]) -> None:
    document["messageSignature"]["signature"] = _flip_b64(document["messageSignature"]["signature"])


TAMPERED = {
    "bundle_checkpoint_signature_invalid": (_checkpoint_signature_flipped, "checkpoint"),
    "bundle_inclusion_proof_hash_wrong": (_proof_hash_flipped, "inclusion proof"),
    "bundle_inclusion_promise_invalid": (_promise_flipped, "inclusion promise"),
    "bundle_integrated_time_moved": (_integrated_time_moved, "inclusion promise"),
    "bundle_signature_invalid": (_signature_of_other_message, "[Ss]ignature"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_keyless_tampered_bundle_is_a_trust_error(keyless: Keyless, name: str) -> None:
    change, words = TAMPERED[name]
    keyless.edit_bundle(change)
    with pytest.raises(TrustError, match=words):
        keyless.verify()


def _body_of_other_signature(document: dict[str, Any]) -> None:
    # A log entry for another signature by the same certificate: the log proves it, but it is not this one.
    entry = _entry(document)
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["signature"]["content"] = _flip_b64(body["spec"]["signature"]["content"])
    entry["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()


def test_keyless_log_entry_for_another_signature_is_a_trust_error(keyless: Keyless) -> None:
    keyless.edit_bundle(_body_of_other_signature)
    with pytest.raises(TrustError):
        keyless.verify()


MALFORMED_BUNDLES = {
    "bundle_not_json": lambda path: path.write_text("{not json"),
    "bundle_truncated": lambda path: path.write_bytes(path.read_bytes()[:200]),
    "bundle_unknown_media_type": lambda path: path.write_text(
        path.read_text().replace("bundle.v0.3+json", "bundle.v9.9+json")
    ),
    "bundle_key_based": lambda path: path.write_bytes(render_key_bundle(SUMS, ecdsa_key("ops"))),
    "bundle_without_certificate": lambda path: path.write_text(
        path.read_text().replace('"certificate"', '"certificateMissing"')
    ),
    "bundle_two_log_entries": lambda path: path.write_text(
        json.dumps(
            (lambda d: (d["verificationMaterial"]["tlogEntries"].append(_entry(d)), d)[1])(json.loads(path.read_text()))
        )
    ),
    "bundle_certificate_not_der": lambda path: path.write_text(
        json.dumps(
            (lambda d: (d["verificationMaterial"]["certificate"].update(rawBytes="AAAA"), d)[1])(
                json.loads(path.read_text())
            )
        )
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_BUNDLES))
def test_keyless_malformed_bundle_is_a_format_error(keyless: Keyless, name: str) -> None:
    MALFORMED_BUNDLES[name](keyless.bundle)
    with pytest.raises(FormatError) as caught:
        keyless.verify()
    assert caught.value.exit_code == 5
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(keyless.bundle))


MALFORMED_ROOTS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "root_without_certificate_authorities_field": (lambda d: d.pop("certificateAuthorities"), "certificateAuthorities"),
    "root_with_no_certificate_authorities": (lambda d: d.update(certificateAuthorities=[]), "Fulcio"),
    "root_with_no_transparency_logs": (lambda d: d.update(tlogs=[]), "transparency log"),
    "root_with_no_ct_logs": (lambda d: d.update(ctlogs=[]), "CTFE"),
    "root_unknown_media_type": (
        lambda d: d.update(mediaType="application/vnd.dev.sigstore.trustedroot+json;version=9"),
        "mediaType",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ROOTS))
def test_keyless_malformed_trusted_root_is_a_format_error(keyless: Keyless, name: str) -> None:
    change, words = MALFORMED_ROOTS[name]
    keyless.edit_root(change)
    with pytest.raises(FormatError, match=words) as caught:
        keyless.verify()
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(keyless.trusted_root))


def test_keyless_trusted_root_not_json_is_a_format_error(keyless: Keyless) -> None:
    keyless.trusted_root.write_text("{")
    with pytest.raises(FormatError) as caught:
        keyless.verify()
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(keyless.trusted_root))


@pytest.mark.parametrize("missing", ["bundle", "trusted_root"])
def test_keyless_missing_file_is_a_usage_error(keyless: Keyless, missing: str) -> None:
    path: Path = getattr(keyless, missing)
    path.unlink()
    with pytest.raises(UsageError, match="No such file") as caught:
        keyless.verify()
    assert caught.value.exit_code == 2 and str(caught.value).startswith(str(path))


def test_sigstore_is_imported_only_when_keyless_verification_runs() -> None:
    # sigstore takes a noticeable part of a second to import; `kit --help` and key-based checks must not pay it.
    code = "import sys, kitbuilder.trust.keyless, kitbuilder.trust.sigstore_bundle; print('sigstore' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- the private instance, cross-checked by a second implementation -----------------------------------------


def test_npm_verifies_keyless_bundle_from_private_root(node_verifier: Path, tmp_path: Path) -> None:
    root = PrivateSigstore("alpha")
    message, bundle, trusted = tmp_path / "SHA256SUMS", tmp_path / "b.json", tmp_path / "trusted_root.json"
    message.write_bytes(SUMS)
    bundle.write_bytes(root.sign_keyless(SUMS, identity=RELEASE_IDENTITY).bundle)
    trusted.write_bytes(root.trusted_root())
    good = run_node(
        node_verifier, "verify-keyless-bundle.mjs", message, bundle, trusted, RELEASE_IDENTITY, GITHUB_ISSUER
    )
    assert good.returncode == 0, good.stderr
    wrong_identity = run_node(
        node_verifier, "verify-keyless-bundle.mjs", message, bundle, trusted, "someone@example.org", GITHUB_ISSUER
    )
    assert wrong_identity.returncode == 1 and "UNTRUSTED_SIGNER_ERROR" in wrong_identity.stderr
    trusted.write_bytes(PrivateSigstore("other").trusted_root())
    other_root = run_node(
        node_verifier, "verify-keyless-bundle.mjs", message, bundle, trusted, RELEASE_IDENTITY, GITHUB_ISSUER
    )
    # Node checks log timestamps before the chain, so the first failure it reports is the other log's promise.
    assert other_root.returncode == 1 and "TLOG_INCLUSION_PROMISE_ERROR" in other_root.stderr
