"""Focused tests of the pure formats: byte vectors in, values or errors out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kitbuilder.core import jsonio, paths, text, timefmt
from kitbuilder.core.jsonio import ParseLimits, check_cost, load_object, loads_strict
from kitbuilder.errors import FormatError


def test_json_parser_rejects_duplicate_keys_and_nan() -> None:
    with pytest.raises(FormatError, match="duplicate key"):
        jsonio.load_object(b'{"a": 1, "a": 2}', what="x")
    with pytest.raises(FormatError):
        jsonio.load_object(b'{"a": NaN}', what="x")


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


# --- strict times, parse cost, text (issue 10: parse-cost bombs, strict dates, hostile strings) ---


@pytest.mark.parametrize(
    "value",
    [
        "2099-02-30T00:00:00Z",
        "2098-12-31T23:59:60Z",
        "2099-01-01T24:00:00Z",
        "2099-13-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2099-01-01T00:00:00.5Z",
        "2099-01-01T00:00:00+00:00",
        "2099-01-01T00:00:00z",
        "2099-01-01t00:00:00Z",
        "2099-01-01 00:00:00Z",
        "2099-01-01T00:00:00Z\n",
        " 2099-01-01T00:00:00Z",
        "２０９９-01-01T00:00:00Z",
        "2099-01-01",
        "",
    ],
)
def test_canonical_time_refuses_everything_but_its_one_form(value: str) -> None:
    with pytest.raises(timefmt.TimeFormatError):
        timefmt.parse_canonical(value)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+00:01",
        "2099-01-01T00:00:00+24:00",
        "2099-01-01T00:00:00+01:60",
        "2099-01-01T00:00:00+0100",
        "2099-02-29",
        "2099-W01-1",
        "2099-01-01T00:00",
        "2099-01-01T00:00:00",
        "2099-01-01T23:59:60Z",
    ],
)
def test_input_time_refuses_impossible_and_overflowing_times(value: str) -> None:
    with pytest.raises(timefmt.TimeFormatError):
        timefmt.parse_input(value)


def test_input_time_converts_offsets_to_utc_and_round_trips() -> None:
    assert timefmt.parse_input("2099-01-01T00:30:00+01:00") == datetime(2098, 12, 31, 23, 30, tzinfo=UTC)
    assert timefmt.parse_input("2096-02-29") == datetime(2096, 2, 29, tzinfo=UTC)
    for value in ("0001-01-01T00:00:00Z", "0999-06-30T12:00:00Z", "9999-12-31T23:59:59Z"):
        assert timefmt.format_utc(timefmt.parse_canonical(value)) == value


@pytest.mark.parametrize(
    "document",
    [b"[" + b"[]," * 100 + b"[]]", b'{"a":[' + b"0," * 200 + b"0]}", b"[" * 60 + b"]" * 60],
)
def test_parse_cost_over_the_limits_is_refused_before_parsing(document: bytes) -> None:
    with pytest.raises(FormatError, match="JSON"):
        check_cost(document, ParseLimits(max_values=50, max_containers=20, why="a test document"), what="doc")


def test_parse_cost_does_not_count_separators_inside_strings() -> None:
    document = b'{"a":"' + b",:[{" * 10_000 + b'"}'
    check_cost(document, ParseLimits(max_values=4, max_containers=1, why="a test document"), what="doc")
    unterminated = b'{"a":"' + b'\\"' * 10_000
    check_cost(unterminated, ParseLimits(max_values=4, max_containers=1, why="a test document"), what="doc")


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "x\\udc00", "\\ud83d\\u0041", "\\ude00\\ud83d"])
def test_lone_surrogates_are_refused(escape: str) -> None:
    with pytest.raises(FormatError, match="surrogate"):
        load_object(b'{"v": "' + escape.encode() + b'"}', what="doc")
    with pytest.raises(ValueError, match="surrogate"):
        loads_strict('{"k": ["' + escape + '"]}')
    with pytest.raises(FormatError, match="surrogate"):
        load_object(b'{"' + escape.encode() + b'": 1}', what="doc")


def test_surrogate_pairs_and_escaped_backslashes_are_text() -> None:
    assert load_object(b'{"v": "\\ud83d\\ude00"}', what="doc") == {"v": "\U0001f600"}
    assert load_object(b'{"v": "\\\\ud800"}', what="doc") == {"v": "\\ud800"}


def test_long_numbers_are_refused_without_converting_them() -> None:
    with pytest.raises(FormatError, match="digits"):
        load_object(b'{"n": ' + b"9" * 100_000 + b"}", what="doc")
    assert load_object(b'{"n": -9223372036854775808}', what="doc") == {"n": -(2**63)}


def test_printable_escapes_controls_bidi_and_separators() -> None:
    raw = "a\x1b[2J\x07\n\r\t\x7f\x9b\u202e\u2066\u200f\u2028\ufeff\U000e0041z é 😀"
    shown = text.printable(raw)
    assert shown == "a\\x1b[2J\\x07\\x0a\\x0d\\x09\\x7f\\x9b\\u202e\\u2066\\u200f\\u2028\\ufeff\\U000e0041z é 😀"
    assert text.printable_tree({"k\n": ["\x1b", 3]}) == {"k\\x0a": ["\\x1b", 3]}
