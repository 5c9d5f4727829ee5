"""DSSE envelopes from bytes: the pre-authentication encoding of the spec, both base64 alphabets, and
exactly the fields DSSE v1 defines (anything else is refused before a signature is looked at)."""

from __future__ import annotations

import json

import pytest

from kitbuilder.core.dsse import MAX_SIGNATURES, Envelope, pae
from kitbuilder.errors import FormatError

GOOD = {"payload": "aGk", "payloadType": "x", "signatures": [{"keyid": "k", "sig": "AA"}]}


def test_pae_matches_the_dsse_spec_example() -> None:
    # From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_envelope_round_trip_and_urlsafe_base64() -> None:
    envelope = Envelope.from_bytes(
        b'{"payload":"_-8","payloadType":"x","signatures":[{"keyid":"k","sig":"AA"}]}', what="e"
    )
    assert envelope.payload == b"\xff\xef"
    assert Envelope.from_bytes(envelope.to_bytes(), what="e") == envelope


@pytest.mark.parametrize(
    "document",
    [
        b'{"payload":"","payloadType":"x","signatures":[]}',
        b'{"payload":"!!","payloadType":"x","signatures":[{"sig":"AA"}]}',
        b'{"payloadType":"x","signatures":[{"sig":"AA"}]}',
        b"[]",
    ],
)
def test_malformed_envelopes_are_format_errors(document: bytes) -> None:
    with pytest.raises(FormatError):
        Envelope.from_bytes(document, what="e")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(extra=1), "unknown field 'extra'"),
        (lambda d: d["signatures"][0].update(note="x"), r"signatures\[0\]: unknown field 'note'"),
        (lambda d: d["signatures"][0].update(keyid=7), r"signatures\[0\].keyid must be a string"),
        (lambda d: d["signatures"][0].update(sig=None), r"signatures\[0\].sig must be a string"),
        (lambda d: d["signatures"][0].update(sig="A A"), r"signatures\[0\].sig: not base64"),
        (lambda d: d.update(payloadType=1), "payload and payloadType must be strings"),
        (lambda d: d.update(signatures=[{"sig": "AA"}] * (MAX_SIGNATURES + 1)), "more than the 64"),
    ],
)
def test_an_envelope_with_one_field_changed_is_refused_naming_it(change: object, message: str) -> None:
    document = json.loads(json.dumps(GOOD))
    change(document)  # type: ignore[operator]
    with pytest.raises(FormatError, match=f"^e: .*{message}"):
        Envelope.from_bytes(json.dumps(document).encode(), what="e")


def test_a_missing_keyid_is_an_empty_hint() -> None:
    envelope = Envelope.from_bytes(b'{"payload":"","payloadType":"x","signatures":[{"sig":"AA"}]}', what="e")
    assert envelope.signatures[0].keyid == "" and envelope.signatures[0].sig == b"\x00"
    assert envelope.pae() == b"DSSEv1 1 x 0 "
