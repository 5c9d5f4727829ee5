"""Signing keys: Ed25519 and ECDSA P-256 from PEM bytes, identified by SPKI digest (ops reads the files).

Key id = lowercase hex SHA-256 of the public key's DER SubjectPublicKeyInfo,
so anyone can recompute it with ``openssl pkey -pubin -outform DER | sha256sum``.
ECDSA signatures are DER-encoded over SHA-256 (what ``openssl dgst -sha256``
and securesystemslib's ``ecdsa-sha2-nistp256`` expect); Ed25519 signs the
message itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kitbuilder.errors import UsageError

KEY_TYPES = ("ed25519", "ecdsa-p256")

PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _spki_der(public: PublicKeyObject) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class PublicKey:
    keyid: str
    key_type: str
    key: PublicKeyObject

    @classmethod
    def from_object(cls, key: object, *, what: str) -> PublicKey:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key_type = "ed25519"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            key_type = "ecdsa-p256"
        else:
            raise UsageError(f"{what}: unsupported key type; use ed25519 or ecdsa-p256")
        return cls(keyid=hashlib.sha256(_spki_der(key)).hexdigest(), key_type=key_type, key=key)

    @classmethod
    def from_pem(cls, data: bytes, *, what: str) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise UsageError(f"{what}: not a PEM SubjectPublicKeyInfo public key ({exc})") from exc
        return cls.from_object(key, what=what)

    def to_pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's over ``message``; never raises for bad signatures."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            else:
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    public: PublicKey
    key: PrivateKeyObject

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))


def generate(key_type: str) -> PrivateKey:
    if key_type == "ed25519":
        private: PrivateKeyObject = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "ecdsa-p256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise UsageError(f"--type {key_type}: expected one of {', '.join(KEY_TYPES)}")
    return PrivateKey(public=PublicKey.from_object(private.public_key(), what=key_type), key=private)


def private_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def private_from_pem(
    data: bytes, *, passphrase: bytes | None, what: str, passphrase_source: str = "a passphrase"
) -> PrivateKey:
    """A PKCS#8 PEM private key, decrypted with ``passphrase`` when it is encrypted.

    UsageError naming ``what`` when the key is encrypted and no passphrase was given (or one was given
    for a plain key), the passphrase is wrong, or the PEM is not a supported key; ``passphrase_source``
    says where the passphrase comes from (``$KIT_PASSPHRASE``), so the message says what to set.
    """
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        hint = (
            f"set {passphrase_source}"
            if passphrase is None
            else f"{passphrase_source} is set but the key is not encrypted"
        )
        raise UsageError(f"{what}: {hint}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{what}: not a usable PKCS#8 PEM private key, or wrong {passphrase_source} ({exc})") from exc
    public = PublicKey.from_object(key.public_key(), what=what)
    # from_object refused every other key type above.
    assert isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey))
    return PrivateKey(public=public, key=key)
