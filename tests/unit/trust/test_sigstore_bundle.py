"""The key-based Sigstore bundle: byte vectors in, key ids or typed errors out."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from kitbuilder.core import checksums
from kitbuilder.errors import FormatError, IntegrityError, KitError, TrustError
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy
from kitbuilder.trust.sigstore_bundle import (
    BUNDLE_MEDIA_TYPE,
    SIGSTORE_BUNDLE_NAME,
    parse_key_bundle,
    render_key_bundle,
    verify_key_bundle,
)
from tests.factories.keys import ecdsa_key, ed25519_key

SUMS = checksums.render([("migrations/001/up.sql", "ab" * 32), ("docs/runbook.md", "cd" * 32)])
KEYS = {"ed25519": ed25519_key("release"), "ecdsa-p256": ecdsa_key("ops")}


def policy_of(*keys: PrivateKey) -> TrustPolicy:
    return TrustPolicy(keys=tuple(k.public for k in keys), threshold=1)


def edited(bundle: bytes, change: Any) -> bytes:
    document = json.loads(bundle)
    change(document)
    return json.dumps(document).encode()


@pytest.fixture(params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return KEYS[request.param]


def test_bundle_holds_digest_signature_and_key_id_hint_and_no_log_entries(key: PrivateKey) -> None:
    document = json.loads(render_key_bundle(SUMS, key))
    assert document["mediaType"] == BUNDLE_MEDIA_TYPE == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {"publicKey": {"hint": key.keyid}, "tlogEntries": []}
    digest = document["messageSignature"]["messageDigest"]
    assert digest == {"algorithm": "SHA2_256", "digest": base64.b64encode(hashlib.sha256(SUMS).digest()).decode()}
    # The same signature SHA256SUMS.sig carries: over the message itself, checkable with the bare key.
    assert key.public.verify(base64.b64decode(document["messageSignature"]["signature"]), SUMS)
    assert set(document) == {"mediaType", "verificationMaterial", "messageSignature"}
    assert SIGSTORE_BUNDLE_NAME == "SHA256SUMS.sigstore.json"


def test_ed25519_bundle_is_byte_identical_across_renders() -> None:
    key = KEYS["ed25519"]
    assert render_key_bundle(SUMS, key) == render_key_bundle(SUMS, key)
    assert render_key_bundle(SUMS, key).endswith(b"}\n")


def test_verify_returns_the_signer_key_id(key: PrivateKey) -> None:
    other = ed25519_key("second")
    assert verify_key_bundle(SUMS, render_key_bundle(SUMS, key), policy=policy_of(other, key), what="b") == key.keyid


def test_modified_message_is_an_integrity_error(key: PrivateKey) -> None:
    bundle = render_key_bundle(SUMS, key)
    with pytest.raises(IntegrityError, match=r"^SHA256SUMS.sigstore.json: message digest .* does not match"):
        verify_key_bundle(SUMS + b"extra\n", bundle, policy=policy_of(key), what=SIGSTORE_BUNDLE_NAME)


def test_untrusted_signer_is_a_trust_error(key: PrivateKey) -> None:
    bundle = render_key_bundle(SUMS, key)
    with pytest.raises(TrustError, match="not valid for any trusted key"):
        verify_key_bundle(SUMS, bundle, policy=policy_of(ed25519_key("stranger")), what="b")


def test_hint_naming_a_trusted_key_does_not_make_a_stranger_trusted() -> None:
    trusted, stranger = KEYS["ed25519"], ed25519_key("stranger")
    forged = edited(
        render_key_bundle(SUMS, stranger),
        lambda d: d["verificationMaterial"]["publicKey"].update(hint=trusted.keyid),
    )
    with pytest.raises(TrustError):
        verify_key_bundle(SUMS, forged, policy=policy_of(trusted), what="b")


def test_wrong_or_missing_hint_does_not_stop_a_trusted_signature(key: PrivateKey) -> None:
    wrong = edited(render_key_bundle(SUMS, key), lambda d: d["verificationMaterial"]["publicKey"].update(hint="0" * 64))
    assert verify_key_bundle(SUMS, wrong, policy=policy_of(key), what="b") == key.keyid
    missing = edited(render_key_bundle(SUMS, key), lambda d: d["verificationMaterial"]["publicKey"].clear())
    assert verify_key_bundle(SUMS, missing, policy=policy_of(key), what="b") == key.keyid


def test_signature_for_a_digest_matching_message_is_still_checked(key: PrivateKey) -> None:
    other = edited(
        render_key_bundle(SUMS, key),
        lambda d: d["messageSignature"].update(signature=base64.b64encode(key.sign(b"something else")).decode()),
    )
    with pytest.raises(TrustError):
        verify_key_bundle(SUMS, other, policy=policy_of(key), what="b")


def test_urlsafe_unpadded_base64_is_read() -> None:
    key = KEYS["ed25519"]

    def urlsafe(document: dict[str, Any]) -> None:
        part = document["messageSignature"]
        for holder, field in ((part, "signature"), (part["messageDigest"], "digest")):
            holder[field] = base64.urlsafe_b64encode(base64.b64decode(holder[field])).decode().rstrip("=")

    assert verify_key_bundle(SUMS, edited(render_key_bundle(SUMS, key), urlsafe), policy=policy_of(key), what="b")


def test_older_spelling_of_the_v03_media_type_is_read() -> None:
    key = KEYS["ecdsa-p256"]
    bundle = edited(
        render_key_bundle(SUMS, key),
        lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.3"),
    )
    assert parse_key_bundle(bundle, what="b").hint == key.keyid


def _set(path: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            document = document[part]
        document[last] = value

    return change


def _drop(path: str) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            document = document[part]
        del document[last]

    return change


MALFORMED = {
    "bundle_v02_media_type": (_set("mediaType", "application/vnd.dev.sigstore.bundle+json;version=0.2"), "mediaType"),
    "bundle_without_media_type": (_drop("mediaType"), "mediaType"),
    "bundle_keyless_certificate": (
        _set("verificationMaterial", {"certificate": {"rawBytes": "AA=="}, "tlogEntries": []}),
        "certificate",
    ),
    "bundle_without_verification_material": (_drop("verificationMaterial"), "verificationMaterial"),
    "bundle_hint_not_string": (_set("verificationMaterial.publicKey.hint", 7), "hint"),
    "bundle_dsse_envelope": (_set("dsseEnvelope", {"payload": "", "payloadType": "x", "signatures": []}), "dsse"),
    "bundle_without_message_signature": (_drop("messageSignature"), "messageSignature"),
    "bundle_sha512_digest": (_set("messageSignature.messageDigest.algorithm", "SHA2_512"), "SHA2_256"),
    "bundle_digest_not_base64": (_set("messageSignature.messageDigest.digest", "!!!"), "base64"),
    "bundle_digest_short": (_set("messageSignature.messageDigest.digest", "AAAA"), "expected 32"),
    "bundle_signature_empty": (_set("messageSignature.signature", ""), "empty"),
    "bundle_signature_not_string": (_set("messageSignature.signature", None), "base64"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_bundle_is_a_format_error(name: str) -> None:
    change, words = MALFORMED[name]
    key = KEYS["ecdsa-p256"]
    bundle = edited(render_key_bundle(SUMS, key), change)
    with pytest.raises(FormatError, match=words) as caught:
        verify_key_bundle(SUMS, bundle, policy=policy_of(key), what=SIGSTORE_BUNDLE_NAME)
    assert caught.value.exit_code == 5
    assert "\n" not in str(caught.value) and str(caught.value).startswith(SIGSTORE_BUNDLE_NAME)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"mediaType": 1.5}', b'{"a": 1, "a": 2}'])
def test_non_object_json_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        verify_key_bundle(SUMS, data, policy=policy_of(KEYS["ed25519"]), what="b")


def test_error_exit_codes_follow_the_documented_table() -> None:
    errors: list[type[KitError]] = [FormatError, IntegrityError, TrustError]
    assert [e.exit_code for e in errors] == [5, 4, 3]
