"""Focused tests of the pure formats: byte vectors in, values or errors out."""

from __future__ import annotations

import pytest

from kitbuilder.core import checksums, jsonio, paths
from kitbuilder.core.dsse import Envelope, pae
from kitbuilder.core.statement import Statement
from kitbuilder.errors import FormatError


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


def test_json_parser_rejects_duplicate_keys_and_nan() -> None:
    with pytest.raises(FormatError, match="duplicate key"):
        jsonio.load_object(b'{"a": 1, "a": 2}', what="x")
    with pytest.raises(FormatError):
        jsonio.load_object(b'{"a": NaN}', what="x")


def test_statement_requires_lowercase_sha256_subjects() -> None:
    good = Statement.from_bytes(
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"'
        + b"a" * 64
        + b'"}}],"predicateType":"p","predicate":{}}',
        what="s",
    )
    assert good.subjects[0].name == "a"
    with pytest.raises(FormatError, match="subject"):
        Statement.from_bytes(good.to_bytes().replace(b"a" * 64, b"A" * 64), what="s")


def test_sha256sums_round_trip_and_strictness() -> None:
    data = checksums.render([("b", "1" * 64), ("a", "2" * 64)])
    assert data == f"{'2' * 64}  a\n{'1' * 64}  b\n".encode()
    assert checksums.parse(data) == {"a": "2" * 64, "b": "1" * 64}
    for bad in (
        data[:-1],
        data.replace(b"  ", b" *", 1),
        data + data.splitlines(keepends=True)[0],
        b"".join(reversed(data.splitlines(keepends=True))),
    ):
        with pytest.raises(FormatError):
            checksums.parse(bad)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "absolute"),
        ("a/../b", "'..'"),
        ("./a", "'.'"),
        ("a//b", "''"),
        ("a b", "characters"),
        ("caf\u00e9", "characters"),
        ("a/" + "x" * 101, "too long"),
        ("", "empty"),
    ],
)
def test_path_rules(path: str, problem: str) -> None:
    message = paths.problem_with(path)
    assert message is not None and problem in message


def test_collision_keys_fold_case_unicode_and_dot_slash() -> None:
    assert paths.collision_key("A/B.sql") == paths.collision_key("a/b.SQL")
    assert paths.collision_key("./a") == paths.collision_key("a")
    assert paths.collision_key("cafe\u0301") == paths.collision_key("caf\u00e9")


def test_ustar_split_uses_prefix_for_long_paths() -> None:
    long_path = "d" * 120 + "/" + "f" * 90
    assert paths.ustar_split(long_path) == ("d" * 120, "f" * 90)
    assert paths.problem_with(long_path) is None
