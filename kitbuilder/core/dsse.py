"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1).

Pure data: the pre-authentication encoding, the envelope model and its JSON
form. Signing and checking signatures against trusted keys is the trust layer's
job; this module only promises that what it parses is shaped like an envelope.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.errors import FormatError

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Each signature may be tried against every trusted key; the cap bounds that work on hostile input.
MAX_SIGNATURES = 64
# The envelope is read before any signature is checked, so it has exactly the fields DSSE v1 defines:
# an unknown field would be parsed (costing memory) and then ignored, which a verifier must not do.
ENVELOPE_FIELDS = frozenset({"payload", "payloadType", "signatures"})
SIGNATURE_FIELDS = frozenset({"keyid", "sig"})
# Its shape is fixed, so its parse cost is too: the object, its three fields, and per signature an object
# with two fields (the payload is one string however large, bounded by the reader's byte limit). Twice the
# signature cap, so an envelope a little over it is parsed and refused below with the count.
ENVELOPE_LIMITS = jsonio.ParseLimits(
    max_values=16 + 10 * MAX_SIGNATURES,
    max_containers=2 + 2 * MAX_SIGNATURES,
    why=f"a DSSE envelope (three fields, at most {MAX_SIGNATURES} signatures)",
)


def pae(payload_type: str, payload: bytes) -> bytes:
    """PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body; lengths in bytes."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return jsonio.dump_pretty(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str) -> Envelope:
        """Parse an envelope; raise FormatError naming ``what`` if it is not one."""
        document = jsonio.load_object(data, what=what, limits=ENVELOPE_LIMITS)
        unknown = sorted(set(document) - ENVELOPE_FIELDS)
        if unknown:
            raise FormatError(
                f"{what}: unknown field {unknown[0]!r}; a DSSE envelope has only payload, payloadType and signatures"
            )
        payload_type = document.get("payloadType")
        payload = document.get("payload")
        signatures = document.get("signatures")
        if not isinstance(payload_type, str) or not isinstance(payload, str):
            raise FormatError(f"{what}: payload and payloadType must be strings")
        if not isinstance(signatures, list) or not signatures:
            raise FormatError(f"{what}: signatures must be a non-empty list")
        if len(signatures) > MAX_SIGNATURES:
            raise FormatError(f"{what}: {len(signatures)} signatures, more than the {MAX_SIGNATURES} a kit may carry")
        parsed: list[Signature] = []
        for number, entry in enumerate(signatures):
            if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
                raise FormatError(f"{what}: signatures[{number}].sig must be a string")
            extra = sorted(set(entry) - SIGNATURE_FIELDS)
            if extra:
                raise FormatError(f"{what}: signatures[{number}]: unknown field {extra[0]!r}; expected keyid and sig")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str):
                raise FormatError(f"{what}: signatures[{number}].keyid must be a string")
            sig = b64decode_lenient(entry["sig"], f"{what}: signatures[{number}].sig")
            parsed.append(Signature(keyid=keyid, sig=sig))
        return cls(
            payload_type=payload_type,
            payload=b64decode_lenient(payload, f"{what}: payload"),
            signatures=tuple(parsed),
        )


def b64decode_lenient(text: str, what: str) -> bytes:
    """Base64 in either alphabet, padding optional (DSSE and protobuf JSON both allow that), decoded strictly."""
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what}: not base64") from exc
