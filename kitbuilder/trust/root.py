"""Trust roots: the keys an air-gapped host trusts, how many must sign, until when.

The file is ``{"signed": {...}, "signatures": [...]}`` in the TUF habit, so a
later root version can be signed by the previous one's keys. A first root is
trusted because the admin placed it on the host; its signatures may be empty.

Pure: roots come in and go out as bytes (ops reads and writes the files), and the
clock is a parameter.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kitbuilder.core import jsonio, schemas, timefmt
from kitbuilder.errors import FormatError, KitError, PolicyError, TrustError, UsageError
from kitbuilder.trust.keys import PrivateKey, PublicKey


@dataclass(frozen=True)
class RootSignature:
    """One entry of ``signatures``: the key id is a hint, ``sig`` base64 over the compact ``signed`` JSON."""

    keyid: str
    sig: str

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> RootSignature:
        # The schema makes both strings; other fields are tolerated (and ignored) as TUF does.
        return cls(keyid=entry["keyid"], sig=entry["sig"])

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self.sig}

    def decoded(self) -> bytes | None:
        try:
            return base64.b64decode(self.sig, validate=True)
        except (binascii.Error, ValueError):
            return None


@dataclass(frozen=True)
class RootDocument:
    """A trust root file as signed: the ``signed`` object (kept whole, for the signed bytes) and its signatures."""

    signed: dict[str, Any]
    signatures: tuple[RootSignature, ...]

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str, not_json: type[KitError] = UsageError) -> RootDocument:
        """Parsed and checked against schemas/trust-root.schema.json; UsageError naming ``what`` otherwise.

        ``not_json`` is the error for bytes that are not a JSON object: UsageError for the root the admin
        placed, FormatError for a successor handed in from outside (`kit trust update`).
        """
        try:
            document = jsonio.load_object(data, what=what)
        except FormatError as exc:
            if not_json is FormatError:
                raise
            raise not_json(str(exc)) from exc
        schemas.validate("trust-root", document, what=what, error_type=UsageError)
        return cls(
            signed=document["signed"],
            signatures=tuple(RootSignature.from_json(entry) for entry in document["signatures"]),
        )

    def message(self) -> bytes:
        """The bytes every signature covers: the compact canonical JSON of ``signed``."""
        return jsonio.dump_compact(self.signed)

    def to_bytes(self) -> bytes:
        return jsonio.dump_pretty({"signed": self.signed, "signatures": [s.to_json() for s in self.signatures]})

    def signers(self, keys: Sequence[PublicKey]) -> set[str]:
        """Key ids among ``keys`` with a valid signature here.

        A signature counts for the key its keyid names, and each key is tried once: trying every signature
        against every key let a root of a few thousand of each cost millions of verifications.
        """
        message = self.message()
        by_id = {key.keyid: key for key in keys}
        tried: set[str] = set()
        found: set[str] = set()
        for entry in self.signatures:
            key = by_id.get(entry.keyid)
            if key is None or key.keyid in tried:
                continue
            tried.add(key.keyid)
            signature = entry.decoded()
            if signature is not None and key.verify(signature, message):
                found.add(key.keyid)
        return found


@dataclass(frozen=True)
class TrustRoot:
    version: int
    expires: datetime
    threshold: int
    keys: tuple[PublicKey, ...]
    products: tuple[str, ...] = ()

    def signed_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "kitbuilder/v1",
            "kind": "TrustRoot",
            "version": self.version,
            "expires": timefmt.format_utc(self.expires),
            "threshold": self.threshold,
            "keys": [
                {"keyid": k.keyid, "type": k.key_type, "publicKeyPem": k.to_pem().decode("ascii")}
                for k in sorted(self.keys, key=lambda k: k.keyid)
            ],
            "products": list(self.products),
        }

    def to_bytes(self) -> bytes:
        return RootDocument(signed=self.signed_json(), signatures=()).to_bytes()

    @classmethod
    def create(
        cls, keys: list[PublicKey], *, threshold: int, expires: datetime, products: tuple[str, ...] = ()
    ) -> TrustRoot:
        distinct = {k.keyid: k for k in keys}
        if len(distinct) != len(keys):
            raise UsageError("--key: the same public key is given twice")
        if not 1 <= threshold <= len(distinct):
            raise UsageError(f"--threshold {threshold}: must be between 1 and the number of keys ({len(distinct)})")
        return cls(version=1, expires=expires, threshold=threshold, keys=tuple(distinct.values()), products=products)

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str) -> TrustRoot:
        """The root in ``data``; UsageError when malformed, TrustError when a later version lacks self-signatures."""
        return cls.from_document(RootDocument.from_bytes(data, what=what), what=what)

    @classmethod
    def from_document(cls, document: RootDocument, *, what: str) -> TrustRoot:
        signed = document.signed
        keys: list[PublicKey] = []
        for number, entry in enumerate(signed["keys"]):
            key = PublicKey.from_pem(entry["publicKeyPem"].encode("ascii"), what=f"{what}: keys[{number}]")
            if key.keyid != entry["keyid"]:
                raise UsageError(f"{what}: keys[{number}].keyid {entry['keyid']} does not match its key ({key.keyid})")
            if key.key_type != entry["type"]:
                raise UsageError(f"{what}: keys[{number}].type is {entry['type']} but the key is {key.key_type}")
            keys.append(key)
        if len({k.keyid for k in keys}) != len(keys):
            raise UsageError(f"{what}: a key is listed twice")
        version: int = signed["version"]
        threshold: int = signed["threshold"]
        if threshold > len(keys):
            raise UsageError(f"{what}: threshold {threshold} is more than the {len(keys)} keys listed")
        if version > 1:
            # That the previous version's keys also signed it is checked by ``check_successor`` when a host
            # moves to it with `kit trust update`.
            signers = document.signers(keys)
            if len(signers) < threshold:
                raise TrustError(
                    f"{what}: version {version} root carries {len(signers)} valid self-signature(s), "
                    f"{threshold} required"
                )
        try:
            expires = timefmt.parse_input(signed["expires"])
        except timefmt.TimeFormatError as exc:
            raise UsageError(f"{what}: expires: {exc}") from exc
        return cls(
            version=version,
            expires=expires,
            threshold=threshold,
            keys=tuple(keys),
            products=tuple(signed.get("products", [])),
        )

    def check_current(self, now: datetime, *, what: str) -> None:
        """PolicyError when the root has expired at ``now``."""
        if now >= self.expires:
            raise PolicyError(
                f"{what}: trust root expired at {timefmt.format_utc(self.expires)}; obtain a newer trust root"
            )


def rotate(current: TrustRoot, successor: TrustRoot, signing_keys: Sequence[PrivateKey]) -> bytes:
    """The successor root, version current+1, signed by ``signing_keys`` (old and new signers)."""
    signed = dataclasses.replace(successor, version=current.version + 1).signed_json()
    message = jsonio.dump_compact(signed)
    signatures = tuple(
        RootSignature(keyid=key.keyid, sig=base64.b64encode(key.sign(message)).decode("ascii")) for key in signing_keys
    )
    document = RootDocument(signed=signed, signatures=signatures)
    check_successor(current, document, what="new trust root")
    return document.to_bytes()


def check_successor(current: TrustRoot, document: RootDocument, *, what: str) -> TrustRoot:
    """Accept ``document`` as the next root only if a threshold of the current keys and of its own signed it."""
    successor = TrustRoot.from_document(document, what=what)
    if successor.version != current.version + 1:
        raise TrustError(f"{what}: version {successor.version} does not follow the current version {current.version}")
    old_signers = document.signers(current.keys)
    if len(old_signers) < current.threshold:
        raise TrustError(
            f"{what}: signed by {len(old_signers)} of the current root's keys, {current.threshold} required"
        )
    new_signers = document.signers(successor.keys)
    if len(new_signers) < successor.threshold:
        raise TrustError(f"{what}: signed by {len(new_signers)} of its own keys, {successor.threshold} required")
    return successor
