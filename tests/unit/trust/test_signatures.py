"""Threshold checks over DSSE envelopes and detached signatures: a signature counts for the trusted key that
verifies it (key ids are only hints), each key once, and a changed byte anywhere breaks it."""

from __future__ import annotations

import dataclasses

import pytest

from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature
from kitbuilder.errors import TrustError
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy, sign_envelope, verify_detached, verify_envelope
from tests.factories.keys import ecdsa_key, ed25519_key

A, B, STRANGER = ed25519_key("sig-a"), ecdsa_key("sig-b"), ed25519_key("sig-stranger")
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1"}'


def policy(*keys: PrivateKey, threshold: int) -> TrustPolicy:
    return TrustPolicy(keys=tuple(k.public for k in keys), threshold=threshold)


def test_a_threshold_of_distinct_trusted_signers_verifies() -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [A, B])
    assert verify_envelope(envelope, policy=policy(A, B, threshold=2), what="m") == tuple(sorted((A.keyid, B.keyid)))
    # Through its bytes, as verify reads it.
    parsed = Envelope.from_bytes(envelope.to_bytes(), what="m")
    assert verify_envelope(parsed, policy=policy(A, B, threshold=2), what="m")


def test_the_same_key_signing_twice_counts_once() -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [A, A])
    with pytest.raises(TrustError, match=r"^m: 1 valid signature\(s\) by trusted keys, 2 required"):
        verify_envelope(envelope, policy=policy(A, B, threshold=2), what="m")


def test_a_strangers_signature_claiming_a_trusted_key_id_does_not_count() -> None:
    forged = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [STRANGER])
    claimed = dataclasses.replace(forged, signatures=(Signature(keyid=A.keyid, sig=forged.signatures[0].sig),))
    with pytest.raises(TrustError, match=f"0 valid signature.*claim key ids {A.keyid[:16]}"):
        verify_envelope(claimed, policy=policy(A, threshold=1), what="m")


def test_a_trusted_signature_under_a_wrong_key_id_still_counts_for_its_key() -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [A])
    hinted = dataclasses.replace(envelope, signatures=(Signature(keyid=B.keyid, sig=envelope.signatures[0].sig),))
    assert verify_envelope(hinted, policy=policy(A, B, threshold=1), what="m") == (A.keyid,)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: dataclasses.replace(e, payload=e.payload + b" "),
        lambda e: dataclasses.replace(e, payload_type="application/json"),
        lambda e: dataclasses.replace(e, signatures=(Signature(e.signatures[0].keyid, e.signatures[0].sig[::-1]),)),
    ],
    ids=["payload", "payload-type", "signature"],
)
def test_one_changed_part_breaks_the_signature(change: object) -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [A])
    with pytest.raises(TrustError, match="0 valid signature"):
        verify_envelope(change(envelope), policy=policy(A, threshold=1), what="m")  # type: ignore[operator]


def test_detached_signatures_name_their_trusted_signer() -> None:
    signature = B.sign(b"SUMS")
    assert verify_detached(signature, b"SUMS", policy=policy(A, B, threshold=1), what="s") == B.keyid
    with pytest.raises(TrustError, match="^s: signature is not valid for any trusted key$"):
        verify_detached(signature, b"SUMS!", policy=policy(A, B, threshold=1), what="s")
    with pytest.raises(TrustError):
        verify_detached(STRANGER.sign(b"SUMS"), b"SUMS", policy=policy(A, threshold=1), what="s")


def test_trust_inputs_are_keyword_only() -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [A])
    with pytest.raises(TypeError):
        verify_envelope(envelope, policy(A, threshold=1), what="m")  # type: ignore[misc]
    with pytest.raises(TypeError):
        verify_detached(b"", b"", policy(A, threshold=1), what="s")  # type: ignore[misc]


@pytest.mark.parametrize("threshold", [0, 3])
def test_a_policy_threshold_outside_its_keys_is_a_bug(threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        policy(A, B, threshold=threshold)
    with pytest.raises(ValueError, match="at least one key"):
        TrustPolicy(keys=(), threshold=1)
