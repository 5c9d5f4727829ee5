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
from typing import Any

from kitbuilder.core import jsonio, timefmt
from kitbuilder.errors import FormatError, TrustError

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
    message: bytes,
    *,
    bundle: bytes,
    trusted_root: bytes,
    identity: str,
    issuer: str,
    bundle_what: str = "Sigstore bundle",
    root_what: str = "trusted root",
) -> KeylessResult:
    """Verify the keyless ``bundle`` over ``message`` against the pinned ``trusted_root`` (both as read).

    ``bundle_what`` and ``root_what`` name them in messages (their paths). FormatError when the bundle or
    trusted root is malformed (or the bundle is not a keyless message-signature bundle), TrustError when
    verification fails: untrusted or expired certificate, bad SCT, log proof or promise, wrong signature,
    or a different identity/issuer.
    """
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ExtensionNotFound
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import MetadataError, VerificationError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy
    from sigstore_models.trustroot import v1 as trustroot_v1

    bundle_path, trusted_root_path = bundle_what, root_what
    entry = _LogEntry.from_bundle(jsonio.load_object(bundle, what=bundle_path), bundle_path)
    try:
        parsed = Bundle.from_json(bundle)
    except (SigstoreError, ValueError) as exc:
        raise FormatError(f"{bundle_path}: not a valid Sigstore bundle ({_reason(exc)})") from exc

    try:
        # What TrustedRoot.from_file does after reading the file: the protobuf model from JSON, then the checks.
        verifier = Verifier(trusted_root=TrustedRoot(trustroot_v1.TrustedRoot.from_json(trusted_root)))
    except (SigstoreError, ValueError) as exc:
        raise FormatError(f"{trusted_root_path}: not a usable Sigstore trusted root ({_reason(exc)})") from exc

    try:
        verifier.verify_artifact(message, parsed, policy.Identity(identity=identity, issuer=issuer))
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

    # The whole DER certificate, so `openssl x509 -outform DER | sha256sum` gives the same value.
    certificate_der = parsed.signing_certificate.public_bytes(Encoding.DER)
    promised = entry.promised_time
    return KeylessResult(
        identity=identity,
        issuer=issuer,
        log_index=entry.log_index,
        integrated_time=timefmt.format_utc(timefmt.from_epoch(promised)) if promised is not None else "",
        certificate_sha256=hashlib.sha256(certificate_der).hexdigest(),
    )


@dataclass(frozen=True)
class _LogEntry:
    """The one transparency log entry of a keyless bundle, as far as kit reports it."""

    log_index: int
    # The integrated time only when an inclusion promise (signed entry timestamp) vouches for it.
    promised_time: int | None

    @classmethod
    def from_bundle(cls, document: dict[str, Any], path: str) -> _LogEntry:
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
            raise FormatError(
                f"{path}: expected exactly one transparency log entry in verificationMaterial.tlogEntries"
            )
        entry = entries[0]
        index = entry.get("logIndex")
        if not isinstance(index, str | int) or not str(index).isdigit():
            raise FormatError(f"{path}: tlogEntries[0].logIndex must be a non-negative integer")
        integrated = entry.get("integratedTime", "0")
        if not isinstance(integrated, str | int) or not str(integrated).isdigit():
            raise FormatError(f"{path}: tlogEntries[0].integratedTime must be a non-negative integer")
        promised = int(integrated) if entry.get("inclusionPromise") and entry.get("integratedTime") else None
        return cls(log_index=int(index), promised_time=promised)


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
