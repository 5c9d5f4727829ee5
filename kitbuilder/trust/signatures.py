"""Threshold checks of DSSE envelopes and detached signatures against trusted keys only.

Key ids in a signature are hints: a signature counts for the trusted key that
verifies it, whatever keyid it claims, and each trusted key counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kitbuilder.core.dsse import Envelope, Signature
from kitbuilder.errors import TrustError
from kitbuilder.trust.keys import PrivateKey, PublicKey


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys count and how many distinct ones must sign."""

    keys: tuple[PublicKey, ...]
    threshold: int
    products: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a trust policy needs at least one key")
        if not 1 <= self.threshold <= len({k.keyid for k in self.keys}):
            raise ValueError("threshold out of range")


def sign_envelope(payload_type: str, payload: bytes, keys: Sequence[PrivateKey]) -> Envelope:
    unsigned = Envelope(payload_type=payload_type, payload=payload, signatures=())
    message = unsigned.pae()
    return Envelope(
        payload_type=payload_type,
        payload=payload,
        signatures=tuple(Signature(keyid=k.keyid, sig=k.sign(message)) for k in keys),
    )


def _signer_of(signature: Signature, message: bytes, keys: Sequence[PublicKey]) -> PublicKey | None:
    hinted = [k for k in keys if k.keyid == signature.keyid]
    others = [k for k in keys if k.keyid != signature.keyid]
    for key in hinted + others:
        if key.verify(signature.sig, message):
            return key
    return None


def verify_envelope(envelope: Envelope, *, policy: TrustPolicy, what: str) -> tuple[str, ...]:
    """Key ids of distinct trusted signers; TrustError when fewer than the threshold signed."""
    message = envelope.pae()
    signers: dict[str, PublicKey] = {}
    for signature in envelope.signatures:
        key = _signer_of(signature, message, policy.keys)
        if key is not None:
            signers[key.keyid] = key
    if len(signers) < policy.threshold:
        claimed = ", ".join(sorted({s.keyid[:16] or "(none)" for s in envelope.signatures}))
        raise TrustError(
            f"{what}: {len(signers)} valid signature(s) by trusted keys, {policy.threshold} required "
            f"(signatures claim key ids {claimed}); check --key/--trust-root"
        )
    return tuple(sorted(signers))


def verify_detached(signature: bytes, message: bytes, *, policy: TrustPolicy, what: str) -> str:
    """Key id of the trusted key that made ``signature``; TrustError when none did."""
    for key in policy.keys:
        if key.verify(signature, message):
            return key.keyid
    raise TrustError(f"{what}: signature is not valid for any trusted key")
