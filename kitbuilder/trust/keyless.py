"""Offline verification of keyless (Fulcio certificate + Rekor) Sigstore bundles over SHA256SUMS.

Trust comes only from the ``trusted_root.json`` the caller pins: its certificate authorities, CT logs and
transparency logs. sigstore-python checks the certificate chain at the log's integration time, the
embedded SCT, the log entry's inclusion proof, signed checkpoint and inclusion promise, the signature over
the message, and that the certificate names ``identity`` (SAN) issued by ``issuer`` (OIDC). Nothing is
fetched: the root comes from the file, never from Sigstore's TUF repository.

sigstore is imported inside ``verify_keyless`` because importing it takes a noticeable fraction of a
second, and only this command needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.core import jsonio, timefmt
from kitbuilder.errors import FormatError, TrustError, UsageError

_MAX_REASON = 240


@dataclass(frozen=True)
class KeylessResult:
    identity: str
    issuer: str
    log_index: int
    # RFC 3339 UTC; empty unless an inclusion promise signs it (Rekor v2 entries rely on a TSA timestamp).
    integrated_time: str
    certificate_sha256: str


def verify_keyless(
    message: bytes, bundle_path: Path, trusted_root_path: Path, *, identity: str, issuer: str
) -> KeylessResult:
    """Verify the keyless bundle at ``bundle_path`` over ``message`` against the pinned trusted root.

    UsageError when a file cannot be read, FormatError when the bundle or trusted root is malformed (or the
    bundle is not a keyless message-signature bundle), TrustError when verification fails: untrusted or
    expired certificate, bad SCT, log proof or promise, wrong signature, or a different identity/issuer.
    """
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ExtensionNotFound
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import MetadataError, VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy

    try:
        raw = bundle_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{bundle_path}: cannot read Sigstore bundle ({exc.strerror})") from exc
    document = jsonio.load_object(raw, what=str(bundle_path))
    _check_shape(document, bundle_path)
    try:
        bundle = Bundle.from_json(raw)
    except (SigstoreError, ValueError) as exc:
        raise FormatError(f"{bundle_path}: not a valid Sigstore bundle ({_reason(exc)})") from exc

    try:
        trusted_root = TrustedRoot.from_file(str(trusted_root_path))
        verifier = Verifier(trusted_root=trusted_root)
    except OSError as exc:
        raise UsageError(f"{trusted_root_path}: cannot read trusted root ({exc.strerror})") from exc
    except (SigstoreError, ValueError) as exc:
        raise FormatError(f"{trusted_root_path}: not a usable Sigstore trusted root ({_reason(exc)})") from exc

    try:
        verifier.verify_artifact(message, bundle, policy.Identity(identity=identity, issuer=issuer))
    except MetadataError as exc:
        raise FormatError(f"{trusted_root_path}: not a usable Sigstore trusted root ({_reason(exc)})") from exc
    except (VerificationError, ExtensionNotFound) as exc:
        reason = _reason(exc)
        raise TrustError(
            f"{bundle_path}: keyless verification against {trusted_root_path} failed: {reason}; {_advice(reason)}"
        ) from exc
    except ValueError as exc:
        # Raised while decoding parts only verification looks into (log entry body, certificate extensions).
        raise FormatError(f"{bundle_path}: malformed Sigstore bundle ({_reason(exc)})") from exc

    entry = document["verificationMaterial"]["tlogEntries"][0]
    # Only the signed entry timestamp (inclusion promise) vouches for the integrated time.
    integrated = entry.get("integratedTime") if entry.get("inclusionPromise") else None
    # The whole DER certificate, so `openssl x509 -outform DER | sha256sum` gives the same value.
    certificate_der = bundle.signing_certificate.public_bytes(Encoding.DER)
    return KeylessResult(
        identity=identity,
        issuer=issuer,
        log_index=int(entry["logIndex"]),
        integrated_time=timefmt.format_utc(timefmt.from_epoch(int(integrated))) if integrated else "",
        certificate_sha256=hashlib.sha256(certificate_der).hexdigest(),
    )


def _check_shape(document: dict[str, Any], path: Path) -> None:
    """Refuse what is not a keyless message-signature bundle before sigstore reports it as a failed check."""
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        raise FormatError(f"{path}: verificationMaterial must be an object; not a Sigstore bundle")
    if "publicKey" in material:
        raise FormatError(f"{path}: a key-based bundle (publicKey hint); verify it with --key or --trust-root")
    if "messageSignature" not in document:
        raise FormatError(f"{path}: no messageSignature; kit verifies message signatures over SHA256SUMS only")
    entries = material.get("tlogEntries")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise FormatError(f"{path}: expected exactly one transparency log entry in verificationMaterial.tlogEntries")
    index = entries[0].get("logIndex")
    if not isinstance(index, str | int) or not str(index).isdigit():
        raise FormatError(f"{path}: tlogEntries[0].logIndex must be a non-negative integer")
    integrated = entries[0].get("integratedTime", "0")
    if not isinstance(integrated, str | int) or not str(integrated).isdigit():
        raise FormatError(f"{path}: tlogEntries[0].integratedTime must be a non-negative integer")


# sigstore's messages name the failed step; each maps to what the operator can check.
_ADVICE = (
    (("SANs do not match", "OIDCIssuer"), "check --cert-identity and --cert-oidc-issuer against the signing workflow"),
    (("digest mismatch", "invalid for input"), "the bundle does not sign this kit's SHA256SUMS"),
    (("inconsistent",), "its log entry records another signature or certificate: the bundle was altered"),
)
_DEFAULT_ADVICE = (
    "the bundle was not issued and logged by an instance in the trusted root (update it if Sigstore rotated keys)"
)


def _advice(reason: str) -> str:
    for needles, advice in _ADVICE:
        if any(needle in reason for needle in needles):
            return advice
    return _DEFAULT_ADVICE


def _reason(exc: BaseException) -> str:
    """One line from a library error: pydantic lists every field on its own lines, sigstore sometimes wraps."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors()
        except TypeError:
            found = None
        if isinstance(found, list) and found and isinstance(found[0], dict):
            first = found[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return f"{where}: {first.get('msg', 'invalid')}{more}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
