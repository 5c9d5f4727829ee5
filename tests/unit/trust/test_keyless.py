"""Keyless Sigstore verification on bytes: a bundle and a pinned trusted root as read, no files, no network.

The private instance in tests/factories/sigstore_testroot.py signs; each case changes one thing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from kitbuilder.errors import FormatError, TrustError
from kitbuilder.trust.keyless import KeylessResult, verify_keyless
from tests.factories.sigstore_testroot import GITHUB_ISSUER, RELEASE_IDENTITY, PrivateSigstore

SUMS = b"ab" * 32 + b"  migrations/001/up.sql\n"
ALPHA, BETA = PrivateSigstore("unit-alpha"), PrivateSigstore("unit-beta")
BUNDLE = ALPHA.sign_keyless(SUMS, identity=RELEASE_IDENTITY).bundle
ROOT = ALPHA.trusted_root()


def verify(
    message: bytes = SUMS, bundle: bytes = BUNDLE, root: bytes = ROOT, identity: str = RELEASE_IDENTITY
) -> KeylessResult:
    return verify_keyless(
        message,
        bundle=bundle,
        trusted_root=root,
        identity=identity,
        issuer=GITHUB_ISSUER,
        bundle_what="b.json",
        root_what="root.json",
    )


def edited(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(data)
    change(document)
    return json.dumps(document).encode()


def test_a_bundle_verifies_against_its_pinned_root() -> None:
    result = verify()
    assert (result.identity, result.issuer, result.log_index) == (RELEASE_IDENTITY, GITHUB_ISSUER, 5)
    assert result.integrated_time == "2025-03-01T12:00:05Z" and len(result.certificate_sha256) == 64


def test_another_message_or_another_instance_is_a_trust_error() -> None:
    with pytest.raises(TrustError, match="^b.json: keyless verification against root.json failed"):
        verify(message=SUMS + b"\n")
    with pytest.raises(TrustError, match="root.json failed"):
        verify(root=BETA.trusted_root())
    with pytest.raises(TrustError, match="--cert-identity"):
        verify(identity="https://github.com/example/other/.github/workflows/release.yml@refs/heads/main")


def test_a_bundle_with_one_field_changed_is_refused() -> None:
    moved = edited(BUNDLE, lambda d: d["verificationMaterial"]["tlogEntries"][0].update(logIndex="6"))
    with pytest.raises((TrustError, FormatError)):
        verify(bundle=moved)
    other = BETA.sign_keyless(SUMS, identity=RELEASE_IDENTITY)
    spliced = edited(
        BUNDLE,
        lambda d: d["messageSignature"].update(signature=json.loads(other.bundle)["messageSignature"]["signature"]),
    )
    with pytest.raises(TrustError):
        verify(bundle=spliced)


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (b"not json", "b.json"),
        (edited(BUNDLE, lambda d: d.pop("messageSignature")), "no messageSignature"),
        (edited(BUNDLE, lambda d: d["verificationMaterial"].update(publicKey={"hint": "k"})), "a key-based bundle"),
        (edited(BUNDLE, lambda d: d["verificationMaterial"].update(tlogEntries=[])), "exactly one transparency"),
        (
            edited(BUNDLE, lambda d: d["verificationMaterial"]["tlogEntries"][0].update(logIndex="-1")),
            "logIndex must be a non-negative integer",
        ),
    ],
    ids=["not-json", "no-signature", "key-based", "no-log-entry", "negative-index"],
)
def test_what_is_not_a_keyless_message_bundle_is_a_format_error(bundle: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        verify(bundle=bundle)


def test_a_trusted_root_that_is_not_one_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="^root.json: not a usable Sigstore trusted root"):
        verify(root=b"{}")
    with pytest.raises(FormatError, match="root.json"):
        verify(root=edited(ROOT, lambda d: d.update(mediaType="application/json")))
