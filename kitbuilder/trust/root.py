"""Trust roots: the keys an air-gapped host trusts, how many must sign, until when.

The file is ``{"signed": {...}, "signatures": [...]}`` in the TUF habit, so a
later root version can be signed by the previous one's keys. A first root is
trusted because the admin placed it on the host; its signatures may be empty.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kitbuilder import inputfile
from kitbuilder.core import jsonio, schemas, timefmt
from kitbuilder.errors import FormatError, PolicyError, TrustError, UsageError
from kitbuilder.trust.keys import PublicKey


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
        return jsonio.dump_pretty({"signed": self.signed_json(), "signatures": []})

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
        try:
            document = jsonio.load_object(data, what=what)
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
        schemas.validate("trust-root", document, what=what, error_type=UsageError)
        signed = document["signed"]
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
        if signed["threshold"] > len(keys):
            raise UsageError(f"{what}: threshold {signed['threshold']} is more than the {len(keys)} keys listed")
        if signed["version"] > 1:
            _check_self_signed(document, keys, signed["threshold"], what=what)
        try:
            expires = timefmt.parse_input(signed["expires"])
        except timefmt.TimeFormatError as exc:
            raise UsageError(f"{what}: expires: {exc}") from exc
        return cls(
            version=signed["version"],
            expires=expires,
            threshold=signed["threshold"],
            keys=tuple(keys),
            products=tuple(signed.get("products", [])),
        )

    @classmethod
    def load(cls, path: Path) -> TrustRoot:
        try:
            data = inputfile.read_small(path, limit=inputfile.TRUST_ROOT_BYTES, what="trust root")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read trust root ({exc.strerror})") from exc
        return cls.from_bytes(data, what=str(path))

    def check_current(self, now: datetime, *, what: str) -> None:
        if now >= self.expires:
            raise PolicyError(
                f"{what}: trust root expired at {timefmt.format_utc(self.expires)}; obtain a newer trust root"
            )


def _check_self_signed(document: dict[str, Any], keys: list[PublicKey], threshold: int, *, what: str) -> None:
    """A root after version 1 must carry a threshold of signatures by its own keys over ``signed``.

    (That the previous version's keys also signed it is checked by ``check_successor`` when a host
    moves to it with `kit trust update`.)
    """
    signers = _signers(document, keys)
    if len(signers) < threshold:
        raise TrustError(
            f"{what}: version {document['signed']['version']} root carries {len(signers)} valid self-signature(s), "
            f"{threshold} required"
        )


def _signers(document: dict[str, Any], keys: tuple[PublicKey, ...] | list[PublicKey]) -> set[str]:
    import base64
    import binascii

    message = jsonio.dump_compact(document["signed"])
    # A signature counts for the key its keyid names, and each key is tried once: trying every signature
    # against every key let a root of a few thousand of each cost millions of verifications.
    by_id = {key.keyid: key for key in keys}
    tried: set[str] = set()
    found: set[str] = set()
    for entry in document.get("signatures", []):
        keyid = entry.get("keyid") if isinstance(entry, dict) else None
        key = by_id.get(keyid) if isinstance(keyid, str) else None
        if key is None or key.keyid in tried:
            continue
        tried.add(key.keyid)
        try:
            signature = base64.b64decode(entry["sig"], validate=True)
        except (binascii.Error, ValueError, KeyError, TypeError):
            continue
        if key.verify(signature, message):
            found.add(key.keyid)
    return found


def rotate(current: TrustRoot, successor: TrustRoot, signing_keys: list[Any]) -> bytes:
    """The successor root, version current+1, signed by ``signing_keys`` (old and new signers)."""
    import base64

    signed = dataclasses.replace(successor, version=current.version + 1).signed_json()
    message = jsonio.dump_compact(signed)
    signatures = [
        {"keyid": key.keyid, "sig": base64.b64encode(key.sign(message)).decode("ascii")} for key in signing_keys
    ]
    document = {"signed": signed, "signatures": signatures}
    check_successor(current, document, what="new trust root")
    return jsonio.dump_pretty(document)


def check_successor(current: TrustRoot, document: dict[str, Any], *, what: str) -> TrustRoot:
    """Accept ``document`` as the next root only if a threshold of the current keys and of its own signed it."""
    successor = TrustRoot.from_bytes(jsonio.dump_compact(document), what=what)
    if successor.version != current.version + 1:
        raise TrustError(f"{what}: version {successor.version} does not follow the current version {current.version}")
    old_signers = _signers(document, current.keys)
    if len(old_signers) < current.threshold:
        raise TrustError(
            f"{what}: signed by {len(old_signers)} of the current root's keys, {current.threshold} required"
        )
    new_signers = _signers(document, successor.keys)
    if len(new_signers) < successor.threshold:
        raise TrustError(f"{what}: signed by {len(new_signers)} of its own keys, {successor.threshold} required")
    return successor
