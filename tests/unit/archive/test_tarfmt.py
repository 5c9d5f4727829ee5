"""Numeric tar header fields as a class (docs/format.md §2.1): the whole field is octal digits then NUL/space.

Every numeric field the header parser reads (checksum, mode, uid, gid, size, mtime) is tried with every
encoding of the same value that some tar reads and kit does not write: a trailing newline (which a `$`
anchored pattern lets through), leading spaces or NUL, base-256 (positive and negative), non-octal digits,
an empty field, digits after the padding. Each is refused naming the field; the forms kits write (digits
then NUL, digits then space, digits then NUL and space, all digits with no terminator) are accepted.
GNU tar is run on the same headers where it is installed: every header kit accepts, it extracts without
error to the same size and mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kitbuilder.archive import tarfmt
from kitbuilder.errors import ArchiveError
from tests.factories.hostile import padding_for, ustar_header

# name -> (offset, width) of every numeric field parse_header reads
FIELDS = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12), "mtime": (136, 12)}
DATA = b"hello"
VALUES = {"mode": 0o644, "uid": 0, "gid": 0, "size": len(DATA), "mtime": 0o1234567}


def _digits(value: int, count: int) -> bytes:
    return f"{value:0{count}o}".encode()


def _encodings(width: int, value: int) -> dict[str, bytes]:
    """Field encodings of ``value`` (a ``width``-byte field) that kit must refuse."""
    digits = _digits(value, width - 1)
    encodings = {
        "trailing newline": digits + b"\n",
        "newline then NUL": _digits(value, width - 2) + b"\n\0",
        "leading space": b" " + _digits(value, width - 2) + b"\0",
        "leading NUL": b"\0" + _digits(value, width - 2) + b"\0",
        "leading newline": b"\n" + _digits(value, width - 2) + b"\0",
        "digit after NUL": _digits(value, width - 2) + b"\0" + b"7",
        "digit after space": _digits(value, width - 3) + b" 7\0",
        "tab padding": digits[:-1] + b"\t\0",
        "non-octal digit 8": b"8" + digits[1:] + b"\0",
        "non-octal letter": digits[:-1] + b"x\0",
        "plus sign": b"+" + _digits(value, width - 2) + b"\0",
        "minus sign": b"-" + _digits(value, width - 2) + b"\0",
        "empty (all NUL)": bytes(width),
        "all spaces": b" " * width,
        "base-256 positive": b"\x80" + value.to_bytes(width - 1, "big"),
        "base-256 negative": b"\xff" * width,
        "utf-8 digit": "٣".encode() + _digits(value, width - 3) + b"\0",
    }
    assert all(len(raw) == width for raw in encodings.values()), encodings
    return encodings


def _accepted_encodings(width: int, value: int) -> dict[str, bytes]:
    encodings = {
        "digits then NUL": _digits(value, width - 1) + b"\0",
        "digits then space": _digits(value, width - 1) + b" ",
        "digits then NUL and space": _digits(value, width - 2) + b"\0 ",
        "digits then space and NUL": _digits(value, width - 2) + b" \0",
        "all digits, no terminator": _digits(value, width),
    }
    assert all(len(raw) == width for raw in encodings.values()), encodings
    return encodings


def _header(raw: dict[int, bytes]) -> bytes:
    return ustar_header("docs/a.md", len(DATA), mtime=VALUES["mtime"], raw=raw)


def _refused_cases() -> list[object]:
    cases: list[object] = []
    for field, (offset, width) in FIELDS.items():
        for encoding, raw in _encodings(width, VALUES[field]).items():
            cases.append(pytest.param(field, offset, raw, id=f"{field}-{encoding}"))
    return cases


def _accepted_cases() -> list[object]:
    cases: list[object] = []
    for field, (offset, width) in FIELDS.items():
        for encoding, raw in _accepted_encodings(width, VALUES[field]).items():
            cases.append(pytest.param(field, offset, raw, id=f"{field}-{encoding}"))
    return cases


@pytest.mark.parametrize(("field", "offset", "raw"), _refused_cases())
def test_numeric_field_encoding_is_refused(field: str, offset: int, raw: bytes) -> None:
    header = _header({offset: raw})
    with pytest.raises(ArchiveError, match=rf"member docs/a\.md: {field} (field is not octal|uses base-256)") as info:
        tarfmt.parse_header(header, offset=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("field", "offset", "raw"), _accepted_cases())
def test_numeric_field_as_kits_write_it_is_accepted(field: str, offset: int, raw: bytes) -> None:
    parsed = tarfmt.parse_header(_header({offset: raw}), offset=0)
    assert (parsed.size, parsed.mode, parsed.mtime) == (VALUES["size"], VALUES["mode"], VALUES["mtime"])


CHECKSUM_ENCODINGS = {
    "trailing newline": lambda digits: digits + b"\n\0",
    "newline instead of space": lambda digits: digits + b"\0\n",
    "leading space": lambda digits: b" " + digits + b"\0",
    "leading NUL": lambda digits: b"\0" + digits + b"\0",
    "base-256": lambda digits: b"\x80" + bytes(5) + int(digits, 8).to_bytes(2, "big"),
    "empty": lambda digits: bytes(8),
}


def _with_checksum(header: bytes, encode: object) -> bytes:
    block = bytearray(header)
    digits = bytes(block[148:154])  # the writer's six digits, then NUL and space
    assert callable(encode)
    block[148:156] = encode(digits)
    return bytes(block)


@pytest.mark.parametrize("encoding", sorted(CHECKSUM_ENCODINGS))
def test_checksum_field_encoding_is_refused(encoding: str) -> None:
    header = _with_checksum(_header({}), CHECKSUM_ENCODINGS[encoding])
    with pytest.raises(ArchiveError, match=r"tar header at stream offset 0: checksum"):
        tarfmt.parse_header(header, offset=0)


def test_checksum_field_as_kits_write_it_is_accepted() -> None:
    header = _header({})
    assert header[148:156].endswith(b"\0 ")
    assert tarfmt.parse_header(header, offset=0).path == "docs/a.md"
    # Seven digits and a NUL, as POSIX also allows, is the same value.
    alternative = _with_checksum(header, lambda digits: b"0" + digits + b"\0")
    assert tarfmt.parse_header(alternative, offset=0).path == "docs/a.md"


@pytest.mark.parametrize(
    ("field", "raw", "words"),
    [
        ("size", b"77777777777\0", "tar header says"),  # the largest octal size: not what was signed
        ("mode", b"0100644\0", "bits outside 0777"),
        ("mode", b"0000000\0", "mode 0, kits write 644"),  # the header is unsigned: only the mode kits write
        ("mtime", b"77777777777\0", None),  # the value of mtime is bound to build.mtime by the member reader
        ("uid", b"7777777\0", "uid 2097151, kits write 0"),  # root's tar -x would chown to it
        ("gid", b"0001750\0", "gid 1000, kits write 0"),
    ],
)
def test_numeric_field_overflowing_values(field: str, raw: bytes, words: str | None) -> None:
    offset, _ = FIELDS[field]
    header = _header({offset: raw})
    if words is not None and words != "tar header says":
        with pytest.raises(ArchiveError, match=words):
            tarfmt.parse_header(header, offset=0)
        return
    parsed = tarfmt.parse_header(header, offset=0)
    if field == "size":
        assert parsed.size == 0o77777777777  # parsed exactly; the reader then compares it with the signed size
    else:
        assert parsed.path == "docs/a.md"


def test_member_name_with_trailing_newline_is_refused_and_escaped() -> None:
    """The path rule is a full match too: a name ending in a newline is not a portable component."""
    with pytest.raises(ArchiveError, match=r"member docs/a\.md\\n: unsafe path") as info:
        tarfmt.parse_header(ustar_header("docs/a.md\n", 0), offset=0)
    assert "\n" not in str(info.value)


def _gnu_tar() -> str | None:
    tar = shutil.which("tar")
    if tar is None:
        return None
    version = subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    return tar if "GNU tar" in version else None


@pytest.mark.parametrize(("field", "offset", "raw"), _accepted_cases())
def test_gnu_tar_extracts_every_accepted_encoding_as_kit_reads_it(
    field: str, offset: int, raw: bytes, tmp_path: Path
) -> None:
    """What kit accepts, GNU tar extracts without error: the same name, size and mode."""
    tar = _gnu_tar()
    if tar is None:
        pytest.skip("GNU tar not installed")
    header = _header({offset: raw})
    parsed = tarfmt.parse_header(header, offset=0)
    stream = header + DATA + padding_for(DATA) + tarfmt.END_OF_ARCHIVE
    result = subprocess.run([tar, "-x", "-C", str(tmp_path)], input=stream, capture_output=True)
    assert result.returncode == 0, result.stderr
    extracted = tmp_path / "docs" / "a.md"
    assert extracted.read_bytes() == DATA[: parsed.size]
    assert os.stat(extracted).st_mode & 0o777 == parsed.mode & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
