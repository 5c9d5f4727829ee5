"""Keys from PEM bytes: key ids anyone can recompute, only the two supported types, encrypted private keys
that say what to set, and signatures that verify for their own key and message only."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kitbuilder.errors import UsageError
from kitbuilder.trust.keys import PrivateKey, PublicKey, generate, private_from_pem, private_pem
from tests.factories.keys import ecdsa_key, ed25519_key

KEYS = {"ed25519": ed25519_key("keys"), "ecdsa-p256": ecdsa_key("keys")}


@pytest.fixture(params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return KEYS[request.param]


def test_key_id_is_the_sha256_of_the_der_spki(key: PrivateKey) -> None:
    der = key.public.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    parsed = PublicKey.from_pem(key.public.to_pem(), what="k.pub")
    assert parsed.keyid == key.keyid == hashlib.sha256(der).hexdigest()
    assert parsed.key_type == key.public.key_type


def test_a_signature_verifies_for_its_key_and_message_only(key: PrivateKey) -> None:
    signature = key.sign(b"SHA256SUMS")
    assert key.public.verify(signature, b"SHA256SUMS")
    assert not key.public.verify(signature, b"SHA256SUMT")
    assert not key.public.verify(signature[:-1] + bytes([signature[-1] ^ 1]), b"SHA256SUMS")
    other = next(k for k in KEYS.values() if k is not key)
    assert not other.public.verify(signature, b"SHA256SUMS")
    assert not key.public.verify(b"", b"SHA256SUMS")


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        rsa.generate_private_key(65537, 1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    ],
    ids=["empty", "garbage", "rsa", "p384"],
)
def test_what_is_not_a_supported_public_key_is_refused_naming_the_input(pem: bytes) -> None:
    with pytest.raises(UsageError, match=r"^k\.pub: "):
        PublicKey.from_pem(pem, what="k.pub")


def test_private_keys_round_trip_plain_and_encrypted(key: PrivateKey) -> None:
    plain = private_from_pem(private_pem(key, None), passphrase=None, what="k.key")
    encrypted = private_from_pem(private_pem(key, b"horse"), passphrase=b"horse", what="k.key")
    assert plain.keyid == encrypted.keyid == key.keyid
    assert key.public.verify(encrypted.sign(b"m"), b"m")


def test_passphrase_problems_say_what_to_set(key: PrivateKey) -> None:
    source = "$KIT_PASSPHRASE"
    with pytest.raises(UsageError, match=r"^k\.key: set \$KIT_PASSPHRASE$"):
        private_from_pem(private_pem(key, b"horse"), passphrase=None, what="k.key", passphrase_source=source)
    with pytest.raises(UsageError, match=r"^k\.key: \$KIT_PASSPHRASE is set but the key is not encrypted$"):
        private_from_pem(private_pem(key, None), passphrase=b"horse", what="k.key", passphrase_source=source)
    with pytest.raises(UsageError, match=r"not a usable PKCS#8 PEM private key, or wrong \$KIT_PASSPHRASE"):
        private_from_pem(private_pem(key, b"horse"), passphrase=b"battery", what="k.key", passphrase_source=source)


def test_generate_makes_both_types_and_refuses_others() -> None:
    assert {generate(t).public.key_type for t in KEYS} == set(KEYS)
    with pytest.raises(UsageError, match="--type rsa: expected one of ed25519, ecdsa-p256"):
        generate("rsa")
