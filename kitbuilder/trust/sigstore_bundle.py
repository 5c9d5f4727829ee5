"""Sigstore bundle v0.3 form of the key-based SHA256SUMS signature.

The bundle carries the same signature as ``SHA256SUMS.sig`` (ECDSA-SHA256 DER, or pure Ed25519 over the
message) with the message's SHA-256 and the signer's key id as the ``publicKey`` hint, and no transparency
log entries: stock Sigstore verifiers check it offline against a pinned key (npm ``@sigstore/verify`` with
zero tlog/timestamp thresholds; ``cosign verify-blob --key --insecure-ignore-tlog`` for ECDSA keys).

Reading follows the trust model: the hint only says which trusted key to try first, and nothing in the
bundle is trusted until a locally held key verifies the signature.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.core.dsse import b64decode_lenient
from kitbuilder.core.manifest import BUNDLE_BYTES
from kitbuilder.errors import FormatError, IntegrityError, TrustError
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The older spelling of the same v0.3 format; Sigstore clients read both, so kit does too.
_BUNDLE_MEDIA_TYPE_ALT = "application/vnd.dev.sigstore.bundle+json;version=0.3"
SIGSTORE_BUNDLE_NAME = "SHA256SUMS.sigstore.json"
DIGEST_ALGORITHM = "SHA2_256"
# A key-based bundle has a fixed shape (mediaType, a key hint, an empty tlogEntries, a digest and a
# signature): read before any signature is checked, so its size and parse cost are fixed too.
KEY_BUNDLE_LIMITS = jsonio.ParseLimits(
    max_values=256, max_containers=64, why="a key-based Sigstore bundle (one signature, a digest, a key hint)"
)


@dataclass(frozen=True)
class KeyBundle:
    """The parts of a key-based message-signature bundle that verification uses."""

    hint: str
    digest: bytes
    signature: bytes


def render_key_bundle(message: bytes, key: PrivateKey) -> bytes:
    """The bundle for ``key``'s signature over ``message``; deterministic JSON (Ed25519 signatures are too)."""
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key.keyid},
            # Present and empty: there is no log entry, and v0.3 readers (npm's) require the field.
            "tlogEntries": [],
        },
        "messageSignature": {
            "messageDigest": {
                "algorithm": DIGEST_ALGORITHM,
                "digest": _b64(hashlib.sha256(message).digest()),
            },
            "signature": _b64(key.sign(message)),
        },
    }
    return jsonio.dump_pretty(document)


def parse_key_bundle(bundle: bytes, *, what: str) -> KeyBundle:
    """The hint, digest and signature of a v0.3 key-based message-signature bundle; FormatError otherwise."""
    if len(bundle) > BUNDLE_BYTES:
        raise FormatError(f"{what}: {len(bundle)} bytes, more than the {BUNDLE_BYTES} a key-based bundle needs")
    document = jsonio.load_object(bundle, what=what, limits=KEY_BUNDLE_LIMITS)
    media_type = document.get("mediaType")
    if media_type not in (BUNDLE_MEDIA_TYPE, _BUNDLE_MEDIA_TYPE_ALT):
        raise FormatError(f"{what}: mediaType is {media_type!r}, expected {BUNDLE_MEDIA_TYPE}")
    material = _object(document, "verificationMaterial", what)
    if "publicKey" not in material:
        kind = "a certificate (keyless) bundle" if "certificate" in material else "no publicKey"
        raise FormatError(
            f"{what}: verificationMaterial has {kind}; key-based bundles name the key in publicKey.hint "
            "(verify keyless bundles with --trusted-root)"
        )
    hint = _object(material, "publicKey", f"{what}: verificationMaterial").get("hint", "")
    if not isinstance(hint, str):
        raise FormatError(f"{what}: verificationMaterial.publicKey.hint must be a string")
    if "dsseEnvelope" in document or "messageSignature" not in document:
        raise FormatError(f"{what}: not a message-signature bundle (expected messageSignature, no dsseEnvelope)")
    signature_part = _object(document, "messageSignature", what)
    digest_part = _object(signature_part, "messageDigest", f"{what}: messageSignature")
    algorithm = digest_part.get("algorithm")
    if algorithm != DIGEST_ALGORITHM:
        raise FormatError(f"{what}: messageSignature.messageDigest.algorithm is {algorithm!r}, expected SHA2_256")
    digest = _b64decode(digest_part.get("digest"), f"{what}: messageSignature.messageDigest.digest")
    if len(digest) != hashlib.sha256().digest_size:
        raise FormatError(f"{what}: messageSignature.messageDigest.digest is {len(digest)} bytes, expected 32")
    signature = _b64decode(signature_part.get("signature"), f"{what}: messageSignature.signature")
    if not signature:
        raise FormatError(f"{what}: messageSignature.signature is empty")
    return KeyBundle(hint=hint, digest=digest, signature=signature)


def verify_key_bundle(message: bytes, bundle: bytes, *, policy: TrustPolicy, what: str) -> str:
    """Key id of the trusted key whose signature over ``message`` the bundle carries.

    FormatError when ``bundle`` is not a v0.3 key-based message-signature bundle, IntegrityError when its
    digest is not the message's, TrustError when no trusted key verifies the signature. Like
    ``SHA256SUMS.sig``, one trusted signer suffices: the kit's threshold is enforced on the DSSE envelope.
    """
    parsed = parse_key_bundle(bundle, what=what)
    actual = hashlib.sha256(message).digest()
    if parsed.digest != actual:
        raise IntegrityError(
            f"{what}: message digest {parsed.digest.hex()[:16]}… does not match sha256 {actual.hex()[:16]}… "
            "of the signed file; the bundle belongs to another SHA256SUMS"
        )
    hinted = [k for k in policy.keys if k.keyid == parsed.hint]
    others = [k for k in policy.keys if k.keyid != parsed.hint]
    for key in hinted + others:
        if key.verify(parsed.signature, message):
            return key.keyid
    raise TrustError(
        f"{what}: signature is not valid for any trusted key (bundle hints key id {parsed.hint[:16] or '(none)'}); "
        "check --key/--trust-root"
    )


def _object(document: dict[str, Any], field: str, what: str) -> dict[str, Any]:
    value = document.get(field)
    if not isinstance(value, dict):
        raise FormatError(f"{what}: {field} must be an object")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what}: must be a base64 string")
    return b64decode_lenient(value, what)
