"""Hostile documents that cost instead of lie: parse-cost bombs, impossible dates, strings that are not text.

Parse-cost bombs replace a document read before any signature is checked (the index,
manifest.json, the DSSE envelope) with JSON made of millions of tiny values, deep
nesting, long numbers or many short strings, no key needed. Each runs `kit` in a child
process whose peak RSS is measured: every refusal is exit 5, one line on stderr and
under 150 MiB. Dates and lone surrogates are refused with the field named, by every
reader of them (verify, inspect, diff, trust init/update, --now, the anti-rollback state),
never a traceback; what a kit says is shown escaped on a terminal.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import zstdframes
from kitbuilder.archive.index import MIN_MEMBER_BYTES, KitIndex
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core import checksums, filelist, jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    Component,
    KitInfo,
    Manifest,
    MetadataBudget,
)
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE
from kitbuilder.ops.kitfile import open_kit, read_metadata
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope
from tests.factories.cli import KitEnv, run_kit
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.kits import TEST_BUILD, kit_members, rewrite_kit, write_payload

MiB = 1 << 20
RSS_BOUND_KIB = 150 * 1024
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# ---------------------------------------------------------------------------------------------------------------
# running kit in a child process, measuring its peak RSS

# The wrapper's only child is kit, so RUSAGE_CHILDREN is kit's own peak (in KiB on Linux).
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "print(json.dumps({'rc': r.returncode, 'stdout': r.stdout.decode('utf-8', 'replace'),"
    " 'stderr': r.stderr.decode('utf-8', 'replace'),"
    " 'maxrss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)
_KIT = [sys.executable, "-c", "from kitbuilder.cli import main; main()"]


def run_measured(*args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *_KIT, *map(str, args)],
        capture_output=True,
        check=True,
        env={**os.environ, "KIT_DEBUG": ""},
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_refused_cheaply(result: dict[str, Any], *words: str) -> None:
    """Exit 5, one clean line naming ``words``, no traceback, and a peak RSS under the bound."""
    stderr = result["stderr"]
    assert result["rc"] == 5, result
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert re.match(r"kit: (archive|format) error: ", stderr), stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"
    assert result["maxrss"] < RSS_BOUND_KIB, f"peak RSS {result['maxrss'] >> 10} MiB: {stderr}"


def assert_refused(result: Any, code: int, *words: str) -> str:
    """An in-process CLI result: exit ``code``, one clean line naming ``words``, no traceback."""
    stderr = result.stderr
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output and "internal error" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert not CONTROL.search(stderr[:-1]), f"control characters in the error: {stderr!r}"
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"
    return str(stderr)


# ---------------------------------------------------------------------------------------------------------------
# bomb shapes: JSON documents of exactly ``size`` bytes that are cheap to send and expensive to parse


def _repeat(head: bytes, item: bytes, tail: bytes, size: int) -> bytes:
    count = max(1, (size - len(head) - len(tail)) // len(item))
    body = item * count
    return head + body[:-1] + tail if item.endswith(b",") else head + body + tail


SHAPES: dict[str, Callable[[int], bytes]] = {
    "empty_lists": lambda size: _repeat(b"[", b"[],", b"]", size),
    "empty_objects": lambda size: _repeat(b"[", b"{},", b"]", size),
    "small_members": lambda size: b'{"a0":0' + b"".join(b',"a%d":0' % n for n in range(1, size // 10)) + b"}",
    "deep_nesting": lambda size: b"[" * (size // 2) + b"]" * (size // 2),
    "long_number": lambda size: b"[" + b"7" * (size - 2) + b"]",
    "many_numbers": lambda size: _repeat(b"[", b"0,", b"]", size),
    "short_strings": lambda size: _repeat(b"[", b'"a",', b"]", size),
    "commas_in_one_string": lambda size: b'{"a":"' + b"," * (size - 8) + b'"}',
}


def replace_index(kit: Path, out: Path, index: bytes) -> Path:
    data = kit.read_bytes()
    offset = zstdframes.parse_footer(data[-zstdframes.FOOTER_SIZE :])
    frame = zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, index)
    out.write_bytes(data[:offset] + frame + zstdframes.footer_frame(offset))
    return out


def index_limit(kit: Path) -> int:
    """The most bytes kit reads for this kit's index before refusing it unread."""
    data = kit.read_bytes()
    offset = zstdframes.parse_footer(data[-zstdframes.FOOTER_SIZE :])
    return min(64 * MiB, KitIndex.max_bytes(min(2 * Caps().max_members + 16, offset // MIN_MEMBER_BYTES)))


def member_limit(kit: Path, name: str) -> int:
    """Format 2: manifest.json and its envelope by the frames, the rest by the file count (format.md §0.9)."""
    with open_kit(kit) as stream:
        metadata = read_metadata(stream, Caps())
    frames = len(metadata.location.index.frames)
    limit = MetadataBudget(metadata.manifest.file_count, frames=frames, format_version=2).max_bytes(name)
    assert limit is not None
    return limit


TARGETS = (MANIFEST_JSON, MANIFEST_DSSE, "index")


def bomb_kit(kit: Path, out: Path, target: str, document: bytes) -> Path:
    if target == "index":
        return replace_index(kit, out, document)
    return rewrite_kit(kit, out, {target: document})


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small signed kit and the public key that verifies it, shared by the bomb cases (they only read it)."""
    root = tmp_path_factory.mktemp("parse-base")
    files = {f"docs/page-{n}.md": b"# page %d\n" % n for n in range(4)}
    return signed_kit(root / "base.kit.tar.zst", files=files), trusted_pub(root)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("target", TARGETS)
def test_bomb_as_large_as_the_limits_allow_is_refused_cheaply(
    tmp_path: Path, base: tuple[Path, Path], target: str, shape: str
) -> None:
    """The largest document the byte limits let through, in each costly shape, is refused before it is parsed."""
    kit, pub = base
    size = index_limit(kit) if target == "index" else member_limit(kit, target)
    bombed = bomb_kit(kit, tmp_path / "bomb.kit.tar.zst", target, SHAPES[shape](size - 16))
    assert_refused_cheaply(run_measured("verify", bombed, "--key", pub))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("command", ["verify", "inspect", "diff"])
def test_64_mib_bomb_is_refused_before_it_is_read(
    tmp_path: Path, base: tuple[Path, Path], target: str, command: str
) -> None:
    """64 MiB of tiny values (1.7 GiB of Python objects once parsed) is over the size a kit of 9 members needs."""
    kit, pub = base
    bombed = bomb_kit(kit, tmp_path / "bomb.kit.tar.zst", target, SHAPES["empty_lists"](64 * MiB))
    args = {"verify": ("verify", bombed, "--key", pub), "inspect": ("inspect", bombed)}
    result = run_measured(*args.get(command, ("diff", kit, bombed)))
    assert_refused_cheaply(result, "exceeds the" if target != "index" else "cap")


def test_64_mib_index_bomb_in_a_kit_large_enough_to_need_it(tmp_path: Path) -> None:
    """A kit whose payload could hold a 64 MiB index: the index is read (once) and refused before parsing."""
    kit = signed_kit(tmp_path / "big.kit.tar.zst", files={"docs/blob.bin": os.urandom(3 * MiB)})
    limit = index_limit(kit)
    assert limit > 60 * MiB  # with the default member cap, the most an index may be
    for shape in ("empty_lists", "deep_nesting"):
        bombed = replace_index(kit, tmp_path / "bomb.kit.tar.zst", SHAPES[shape](limit - 16))
        assert_refused_cheaply(run_measured("verify", bombed, "--key", trusted_pub(tmp_path)), "archive index")


def test_envelope_with_an_unknown_field_is_refused(kit_env: KitEnv, built_kit: Path) -> None:
    """Even a small extra field: a verifier must not parse and then ignore what a signer did not sign."""
    envelope = json.loads(kit_members(built_kit)[MANIFEST_DSSE])
    for where, extended in (
        ("'extra'", {**envelope, "extra": "A" * 1000}),
        ("signatures[0]", {**envelope, "signatures": [{**envelope["signatures"][0], "note": "x"}]}),
    ):
        bombed = rewrite_kit(
            built_kit, kit_env.root / "extra.kit.tar.zst", {MANIFEST_DSSE: json.dumps(extended).encode()}
        )
        assert_refused(run_kit("verify", bombed, "--key", kit_env.ed_pub), 5, MANIFEST_DSSE, where, "unknown field")


def test_honest_kit_is_well_under_its_limits(built_kit: Path) -> None:
    """The limits are reachable by honest kits: each document of a built kit uses a small part of its limit."""
    members = kit_members(built_kit)
    for name in (MANIFEST_JSON, MANIFEST_DSSE, SHA256SUMS_SIG):
        limit = member_limit(built_kit, name)
        assert len(members[name]) * 4 < limit, name
    # Per line, these are capped at the longest line a path of 255 bytes makes: paths here are a third of that.
    for name in (SHA256SUMS, FILE_LIST):
        assert len(members[name]) * 2 < member_limit(built_kit, name), name


# ---------------------------------------------------------------------------------------------------------------
# signed kits whose signer wrote something that is not a valid kit


def trusted_pub(root: Path) -> Path:
    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    return write_pair(RELEASE, keys / "release")[1]


def _ascii_json(value: Any, *, pretty: bool) -> bytes:
    # ensure_ascii, so a lone surrogate is written as its \u escape (UTF-8 cannot hold it).
    if pretty:
        return (json.dumps(value, sort_keys=True, indent=2) + "\n").encode("ascii")
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


def signed_kit(
    out: Path,
    *,
    kit: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    signer: PrivateKey = RELEASE,
) -> Path:
    """A kit whose ``kit`` block (merged over a valid one) the trusted key signs, whatever it says."""
    files = files if files is not None else {"docs/a.md": b"hello\n"}
    with out.open("wb") as sink:
        writer = KitWriter2(sink, level=3)
        entries, frames = write_payload(writer, ((path, data, "doc", "docs") for path, data in files.items()))
        listed = filelist.render(entries)
        manifest = (
            Manifest(
                kit=KitInfo("parse-kit", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
                build=TEST_BUILD,
                components=(Component("docs", "doc"),),
                files=entries,
                frames=frames,
                format_version=2,
            )
            .sealed_with(filelist.describe(listed, entries))
            .to_json()
        )
        manifest["kit"].update(kit or {})
        sums = checksums.render((f.path, f.sha256) for f in entries)
        sums_entry = writer.add_metadata(SHA256SUMS, sums)
        writer.add_metadata(SHA256SUMS_SIG, signer.sign(sums))
        list_entry = writer.add_metadata(FILE_LIST, listed)
        try:
            manifest_bytes = jsonio.dump_pretty(manifest)  # what kit build writes
        except UnicodeEncodeError:
            manifest_bytes = _ascii_json(manifest, pretty=True)  # a lone surrogate: only its escape can be written
        writer.add_metadata(MANIFEST_JSON, manifest_bytes)
        subjects = [
            {"name": FILE_LIST, "digest": {"sha256": list_entry.sha256}},
            {"name": SHA256SUMS, "digest": {"sha256": sums_entry.sha256}},
        ]
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subjects,
            "predicateType": MANIFEST_PREDICATE_TYPE,
            "predicate": manifest,
        }
        envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, _ascii_json(statement, pretty=False), [signer])
        writer.add_metadata(MANIFEST_DSSE, envelope.to_bytes())
        writer.finish()
    return out


def test_signed_kit_helper_makes_a_valid_kit(tmp_path: Path) -> None:
    kit = signed_kit(tmp_path / "ok.kit.tar.zst")
    result = run_kit("verify", kit, "--key", trusted_pub(tmp_path))
    assert result.exit_code == 0, result.output


def readers(kit: Path, pub: Path, good: Path) -> dict[str, tuple[Any, ...]]:
    """Every command that reads a kit's manifest, with and without keys."""
    return {
        "verify": ("verify", kit, "--key", pub),
        "inspect": ("inspect", kit),
        "inspect --key": ("inspect", kit, "--key", pub),
        "diff": ("diff", good, kit),
        "diff --key": ("diff", good, kit, "--key", pub),
    }


IMPOSSIBLE_TIMES = {
    "february_30": "2099-02-30T00:00:00Z",
    "month_13": "2099-13-01T00:00:00Z",
    "day_00": "2099-01-00T00:00:00Z",
    "leap_second": "2098-12-31T23:59:60Z",
    "hour_24": "2099-01-01T24:00:00Z",
    "minute_60": "2099-01-01T00:60:00Z",
    "year_0000": "0000-01-01T00:00:00Z",
    "fullwidth_digits": "２０９９-01-01T00:00:00Z",
    "trailing_newline": "2099-01-01T00:00:00Z\n",
    "fraction": "2099-01-01T00:00:00.5Z",
    "offset": "2099-01-01T00:00:00+01:00",
    "lowercase_z": "2099-01-01T00:00:00z",
    "space_separator": "2099-01-01 00:00:00Z",
    "leading_space": " 2099-01-01T00:00:00Z",
    "no_zone": "2099-01-01T00:00:00",
}


@pytest.mark.parametrize("field", ["expires", "created"])
@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_TIMES))
def test_signed_impossible_time_is_refused_by_every_reader(tmp_path: Path, field: str, case: str) -> None:
    pub = trusted_pub(tmp_path)
    good = signed_kit(tmp_path / "good.kit.tar.zst")
    kit = signed_kit(tmp_path / "bad.kit.tar.zst", kit={field: IMPOSSIBLE_TIMES[case]})
    for name, args in readers(kit, pub, good).items():
        assert_refused(run_kit(*args), 5, f"kit.{field}"), name


@pytest.mark.parametrize("field", ["version", "description", "name"])
def test_signed_lone_surrogate_is_refused_by_every_reader(tmp_path: Path, field: str) -> None:
    pub = trusted_pub(tmp_path)
    good = signed_kit(tmp_path / "good.kit.tar.zst")
    kit = signed_kit(tmp_path / "bad.kit.tar.zst", kit={field: "1.0\ud800"})
    for name, args in readers(kit, pub, good).items():
        assert_refused(run_kit(*args), 5, "lone surrogate"), name


@pytest.mark.parametrize("text", ["\ud800", "\udfff", "a\udc00b", "\ud83d"])
def test_unsigned_lone_surrogate_is_refused_without_keys(kit_env: KitEnv, built_kit: Path, text: str) -> None:
    manifest = json.loads(kit_members(built_kit)[MANIFEST_JSON])
    manifest["kit"]["version"] = text
    forged = rewrite_kit(
        built_kit, kit_env.root / "forged.kit.tar.zst", {MANIFEST_JSON: _ascii_json(manifest, pretty=True)}
    )
    for args in (
        ("inspect", forged),
        ("inspect", forged, "--json"),
        ("diff", built_kit, forged),
        ("diff", forged, built_kit),
    ):
        assert_refused(run_kit(*args), 5, MANIFEST_JSON, "lone surrogate")


def test_surrogate_pair_is_text_and_accepted(tmp_path: Path) -> None:
    """An escaped pair is one real character (here U+1F600): not refused, and shown as itself."""
    kit = signed_kit(tmp_path / "pair.kit.tar.zst", kit={"version": "1.0-\U0001f600"})
    result = run_kit("inspect", kit, "--key", trusted_pub(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1.0-\U0001f600" in result.stdout


HOSTILE_TEXT = "1.0\x1b]0;pwned\x07\u202eevil\nkit: OK\r\x9b2J"


def test_kit_strings_are_escaped_on_the_terminal_and_exact_in_json(tmp_path: Path) -> None:
    pub = trusted_pub(tmp_path)
    good = signed_kit(tmp_path / "good.kit.tar.zst")
    kit = signed_kit(tmp_path / "odd.kit.tar.zst", kit={"version": HOSTILE_TEXT, "description": HOSTILE_TEXT})
    for args in (("verify", kit, "--key", pub), ("inspect", kit), ("inspect", kit, "--key", pub), ("diff", good, kit)):
        result = run_kit(*args)
        assert result.exit_code == 0, result.output
        for line in result.stdout.splitlines():
            assert not CONTROL.search(line), f"{args[0]}: raw control or bidi character in {line!r}"
        assert "\\x1b]0;pwned\\x07\\u202eevil\\x0akit: OK\\x0d\\x9b2J" in result.stdout, result.stdout
        # JSON output carries the exact string (json.dumps escapes it) and is valid UTF-8 text.
        json_result = run_kit(*args, "--json")
        assert json_result.exit_code == 0, json_result.output
        json_result.stdout_bytes.decode("utf-8")
        assert HOSTILE_TEXT in strings(json.loads(json_result.stdout))


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


# ---------------------------------------------------------------------------------------------------------------
# dates typed by people and dates in files kit wrote: --now, --expires, trust roots, the anti-rollback state

BAD_INPUT_TIMES = {
    **{k: v for k, v in IMPOSSIBLE_TIMES.items() if k not in ("fraction", "offset", "no_zone")},
    "fraction": "2099-01-01T00:00:00.5Z",
    "no_zone": "2099-01-01T00:00:00",
    "offset_hours_24": "2099-01-01T00:00:00+24:00",
    "offset_overflow_9999": "9999-12-31T23:59:59-01:00",
    "offset_overflow_0001": "0001-01-01T00:00:00+01:00",
    "date_february_29_non_leap": "2099-02-29",
    "week_date": "2099-W01-1",
    "ordinal_date": "2099-001",
    "compact": "20990101T000000Z",
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT_TIMES))
def test_bad_typed_time_is_a_usage_error_everywhere(kit_env: KitEnv, built_kit: Path, case: str) -> None:
    value = BAD_INPUT_TIMES[case]
    out = kit_env.root / "trust.json"
    assert_refused(
        run_kit("trust", "init", "--key", kit_env.ed_pub, "--threshold", "1", "--expires", value, "--out", out),
        2,
        "--expires",
    )
    assert not out.exists()
    assert_refused(run_kit("verify", built_kit, "--key", kit_env.ed_pub, "--now", value), 2, "--now")
    assert_refused(run_kit("inspect", built_kit, "--key", kit_env.ed_pub, "--now", value), 2, "--now")
    assert_refused(run_kit("diff", built_kit, built_kit, "--key", kit_env.ed_pub, "--now", value), 2, "--now")
    root = json.loads(_trust_root(kit_env))
    root["signed"]["expires"] = value
    (kit_env.root / "bad-root.json").write_text(json.dumps(root))
    for args in (("verify", built_kit), ("inspect", built_kit), ("diff", built_kit, built_kit)):
        assert_refused(run_kit(*args, "--trust-root", kit_env.root / "bad-root.json"), 2, "expires")


def _trust_root(kit_env: KitEnv) -> str:
    out = kit_env.root / "good-root.json"
    result = run_kit(
        "trust", "init", "--key", kit_env.ed_pub, "--threshold", "1", "--expires", "2099-01-01", "--out", out
    )
    assert result.exit_code == 0, result.output
    return out.read_text()


GOOD_INPUT_TIMES = {
    "2099-01-01": "2099-01-01T00:00:00Z",
    "2099-01-01T12:30:00Z": "2099-01-01T12:30:00Z",
    "2099-01-01T12:30:00+02:00": "2099-01-01T10:30:00Z",
    "2099-01-01T00:30:00-01:00": "2099-01-01T01:30:00Z",
    "2096-02-29": "2096-02-29T00:00:00Z",
    "9999-12-31T23:59:59Z": "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59+01:00": "9999-12-31T22:59:59Z",
}


@pytest.mark.parametrize("typed", sorted(GOOD_INPUT_TIMES))
def test_good_typed_time_is_accepted_and_written_in_utc(kit_env: KitEnv, typed: str) -> None:
    out = kit_env.root / "trust.json"
    result = run_kit("trust", "init", "--key", kit_env.ed_pub, "--threshold", "1", "--expires", typed, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["signed"]["expires"] == GOOD_INPUT_TIMES[typed]


def test_trust_update_refuses_a_successor_with_an_impossible_expiry(kit_env: KitEnv) -> None:
    current = kit_env.root / "good-root.json"
    current.write_text(_trust_root(kit_env))
    successor = json.loads(current.read_text())
    successor["signed"]["version"] = 2
    successor["signed"]["expires"] = "2099-02-30T00:00:00Z"
    # Properly self-signed and signed by the current key (the same one), so only the date is wrong.
    signature = base64.b64encode(RELEASE.sign(jsonio.dump_compact(successor["signed"]))).decode("ascii")
    successor["signatures"] = [{"keyid": RELEASE.keyid, "sig": signature}]
    (kit_env.root / "next.json").write_text(json.dumps(successor))
    assert_refused(run_kit("trust", "update", kit_env.root / "next.json", "--trust-root", current), 2, "expires")


@pytest.mark.parametrize("last_seen", ["2099-02-30T00:00:00Z", "2099-01-01T00:00:00+00:00", "2099-01-01", 7])
def test_damaged_anti_rollback_time_is_a_usage_error(kit_env: KitEnv, built_kit: Path, last_seen: object) -> None:
    state = Path(os.environ["KIT_STATE_DIR"])
    assert run_kit("verify", built_kit, "--key", kit_env.ed_pub).exit_code == 0
    (record,) = state.iterdir()
    document = json.loads(record.read_text())
    document["lastSeen"] = last_seen
    record.write_text(json.dumps(document))
    assert_refused(run_kit("verify", built_kit, "--key", kit_env.ed_pub), 2, "anti-rollback state")


def test_envelope_payload_is_checked_before_the_statement_is_parsed(kit_env: KitEnv, built_kit: Path) -> None:
    """An unsigned payload of tiny values never reaches the statement parser: the signature fails first."""
    envelope = json.loads(kit_members(built_kit)[MANIFEST_DSSE])
    envelope["payload"] = base64.b64encode(SHAPES["empty_lists"](2 * MiB)).decode("ascii")
    forged = rewrite_kit(built_kit, kit_env.root / "forged.kit.tar.zst", {MANIFEST_DSSE: json.dumps(envelope).encode()})
    assert_refused(run_kit("verify", forged, "--key", kit_env.ed_pub), 3, MANIFEST_DSSE)
