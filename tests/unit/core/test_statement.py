"""in-toto Statement v1 from bytes: exact type, typed subjects with lowercase SHA-256 digests."""

from __future__ import annotations

import json

import pytest

from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, STATEMENT_TYPE, Statement, Subject
from kitbuilder.errors import FormatError

GOOD = Statement(subjects=(Subject("kit", "a" * 64),), predicate_type=MANIFEST_PREDICATE_TYPE, predicate={"n": 1})


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


def test_statement_bytes_are_compact_and_round_trip_integers_exactly() -> None:
    data = GOOD.to_bytes()
    assert data.startswith(b'{"_type":"' + STATEMENT_TYPE.encode())
    parsed = Statement.from_bytes(data, what="s")
    assert parsed == GOOD and isinstance(parsed.predicate["n"], int)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), "_type must be"),
        (lambda d: d.update(predicate=[]), "predicateType must be a string and predicate an object"),
        (lambda d: d.pop("predicateType"), "predicateType must be a string"),
        (lambda d: d.update(subject=[]), "subject must be a non-empty list"),
        (lambda d: d["subject"][0].pop("name"), r"subject\[0\] needs a name"),
        (lambda d: d["subject"][0]["digest"].update(sha256="a" * 63), r"subject\[0\]"),
        (lambda d: d["subject"][0].update(digest={"sha512": "a" * 128}), r"subject\[0\]"),
    ],
)
def test_a_statement_with_one_field_changed_is_refused(change: object, message: str) -> None:
    document = json.loads(GOOD.to_bytes())
    change(document)  # type: ignore[operator]
    with pytest.raises(FormatError, match=f"^s: {message}"):
        Statement.from_bytes(json.dumps(document).encode(), what="s")
