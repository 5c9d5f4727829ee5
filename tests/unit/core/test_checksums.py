"""SHA256SUMS from bytes: only what render writes is accepted (sorted, two spaces, lowercase, newline-ended)."""

from __future__ import annotations

import pytest

from kitbuilder.core import checksums
from kitbuilder.errors import FormatError

DATA = checksums.render([("b", "1" * 64), ("a", "2" * 64)])


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
    ("data", "message"),
    [
        (checksums.render([("a", "ab" * 32)]).replace(b"ab", b"AB"), "line 1"),
        (DATA.replace(b"  a", b"  a\\b"), "line 1"),
        (DATA.replace(b"\n", b"\r\n"), "canonical"),
        (b"\xff" + DATA, "not UTF-8"),
        (DATA.replace(b"  b", b"  a"), "line 2: a listed twice"),
        (DATA + b"\n", "line 3"),
    ],
    ids=["uppercase", "backslash", "crlf", "not-utf8", "twice", "blank-line"],
)
def test_sums_with_one_byte_changed_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        checksums.parse(data)


def test_empty_sums_are_empty() -> None:
    assert checksums.parse(b"") == {} and checksums.render([]) == b""
