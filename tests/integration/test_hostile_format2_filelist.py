"""Signed file lists that lie or break their one form, through kit verify and kit inspect (docs/format.md §0.7).

Every case is a format-2 kit validly signed by the trusted key whose file list, fileList record, SHA256SUMS or
statement a hostile signer made wrong, or whose members someone without a key changed after signing. Each must
be refused with its documented exit code, one line on stderr naming what is wrong, and nothing written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import zstdframes
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, SHA256SUMS, SHA256SUMS_SIG
from kitbuilder.core.statement import Subject
from tests.factories.cli import run_kit
from tests.factories.filelist_kits import crafted_list, first_line, lines
from tests.factories.hostile import RELEASE
from tests.factories.hostile2 import small_files
from tests.factories.keys import write_pair


def _swap_digit(data: bytes) -> bytes:
    """The same length, one hex digit of the first digest changed: a list anyone could write, not the signed one."""
    at = data.index(b'"sha256":"') + len(b'"sha256":"')
    return data[:at] + (b"0" if data[at : at + 1] != b"0" else b"1") + data[at + 1 :]


def _replace_member(name: str, change: Callable[[bytes], bytes]) -> Callable[[dict[str, bytes]], None]:
    def hook(members: dict[str, bytes]) -> None:
        members[name] = change(members[name])

    return hook


def _field(name: str, value: Any) -> Callable[[bytes], bytes]:
    def change(line: bytes) -> bytes:
        item = json.loads(line)
        item[name] = value
        return json.dumps(item, sort_keys=True, separators=(",", ":")).encode()

    return change


def _inline_files(manifest: dict[str, Any]) -> None:
    manifest["files"] = [{"path": "docs/a.md"}]


def _one_subject_per_file(subjects: list[Subject]) -> list[Subject]:
    return [Subject("docs/a.md", "0" * 64), *subjects]


def _move_first_file_to(component: str) -> Callable[[dict[str, Any]], None]:
    """Signed totals that still add up to fileList but count the first file under another (listed) component."""
    size = len(small_files()[0][1])

    def hook(manifest: dict[str, Any]) -> None:
        docs = manifest["components"][0]
        docs.update(files=docs["files"] - 1, bytes=docs["bytes"] - size)
        docs["byRole"] = {"doc": {"files": docs["files"], "bytes": docs["bytes"]}}
        totals = {"files": 1, "bytes": size}
        manifest["components"].append({"id": component, "role": "doc", **totals, "byRole": {"doc": totals}})

    return hook


def _relabel_by_role(role: str) -> Callable[[dict[str, Any]], None]:
    def hook(manifest: dict[str, Any]) -> None:
        docs = manifest["components"][0]
        docs["byRole"] = {role: docs["byRole"]["doc"]}

    return hook


def _drop_totals(manifest: dict[str, Any]) -> None:
    for component in manifest["components"]:
        for name in ("files", "bytes", "byRole"):
            del component[name]


def _add_to_totals(**extra: int) -> Callable[[dict[str, Any]], None]:
    def hook(manifest: dict[str, Any]) -> None:
        docs = manifest["components"][0]
        for name, value in extra.items():
            docs[name] += value
            docs["byRole"]["doc"][name] += value

    return hook


def _ref(**values: Any) -> Callable[[dict[str, Any]], None]:
    def hook(ref: dict[str, Any]) -> None:
        for name, value in values.items():
            ref[name] = ref[name] + value if isinstance(value, int) and name in ("count", "size") else value

    return hook


CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    # The one byte form of a line (a hostile signer signs a list in another form).
    "line_with_a_space": (lambda: crafted_list(list_hook=first_line(lambda b: b.replace(b",", b", ", 1))), 5, "line 1"),
    "line_keys_unsorted": (
        lambda: crafted_list(list_hook=first_line(lambda b: b'{"path"' + b[1:].replace(b',"path"', b"", 1))),
        5,
        "line 1",
    ),
    "line_not_json": (lambda: crafted_list(list_hook=first_line(lambda b: b"{not json}")), 5, "not a JSON object"),
    "line_leading_zero": (
        lambda: crafted_list(list_hook=first_line(lambda b: b.replace(b'"at":0', b'"at":00'))),
        5,
        "line 1",
    ),
    "line_extra_field": (
        lambda: crafted_list(list_hook=first_line(_field("mode", 420))),
        5,
        "expected exactly the fields",
    ),
    "last_line_without_newline": (lambda: crafted_list(list_hook=lambda d: d[:-1]), 5, "no newline"),
    "blank_line": (lambda: crafted_list(list_hook=lambda d: d + b"\n"), 5, "line 5"),
    "path_with_dotdot": (lambda: crafted_list(list_hook=first_line(_field("path", "docs/../a.md"))), 5, "docs/../a.md"),
    "path_needing_escape": (lambda: crafted_list(list_hook=first_line(_field("path", "docs/\u00e9.md"))), 5, "path"),
    "frame_past_the_payload_frames": (lambda: crafted_list(list_hook=first_line(_field("frame", 99))), 5, "frame 99"),
    "at_outside_its_frame": (lambda: crafted_list(list_hook=first_line(_field("at", 1 << 30))), 5, "at 1073741824"),
    "at_not_where_the_file_before_ends": (
        lambda: crafted_list(list_hook=lines(lambda ls: [ls[0], _field("at", 1536)(ls[1]), *ls[2:]])),
        5,
        "kit index: member docs/b.sql",
    ),
    "path_listed_twice": (
        lambda: crafted_list(
            list_hook=lines(lambda ls: [ls[0], *ls]),
            ref_hook=lambda r: r.update(count=5, payloadBytes=r["payloadBytes"] + len(small_files()[0][1])),
        ),
        5,
        "listed twice",
    ),
    # The fileList record against the list.
    "count_says_one_more": (
        lambda: crafted_list(ref_hook=_ref(count=1)),
        5,
        "fileList.count",
    ),
    "count_says_one_less": (
        lambda: crafted_list(ref_hook=_ref(count=-1)),
        5,
        "fileList.count",
    ),
    "size_says_one_more": (lambda: crafted_list(ref_hook=_ref(size=1)), 5, "fileList.size"),
    "payload_bytes_lie": (lambda: crafted_list(ref_hook=_ref(payloadBytes=1)), 5, "payloadBytes"),
    "digest_in_record_lies": (
        lambda: crafted_list(ref_hook=lambda r: r.update(sha256="0" * 64)),
        4,
        f"statement subject {FILE_LIST}",
    ),
    # SHA256SUMS and the statement against the list.
    "sums_differ_from_the_list": (lambda: crafted_list(sums_hook=_swap_digit_sums), 4, "SHA256SUMS: differs"),
    "sums_list_one_more_file": (
        lambda: crafted_list(sums_hook=lambda d: d + b"0" * 64 + b"  docs/zz.md\n"),
        4,
        "docs/zz.md",
    ),
    "subject_per_file_as_the_development_build": (
        lambda: crafted_list(subjects_hook=_one_subject_per_file),
        4,
        "statement subject",
    ),
    "manifest_lists_files_inline": (lambda: crafted_list(manifest_hook=_inline_files), 5, "development build"),
    # The components' signed totals (manifest.json) against the list: they add up, but not per component.
    "component_totals_give_a_file_to_another_component": (
        lambda: crafted_list(manifest_hook=_move_first_file_to("notes")),
        4,
        "component 'docs' states 3 files, manifest.files.jsonl holds 4",
    ),
    "component_totals_by_role_lie": (
        lambda: crafted_list(manifest_hook=_relabel_by_role("sbom")),
        4,
        "component 'docs' states files/bytes by role sbom",
    ),
    "line_names_a_component_manifest_does_not_list": (
        lambda: crafted_list(list_hook=first_line(_field("component", "ghost"))),
        4,
        "component 'ghost', which manifest.json does not list",
    ),
    "components_without_totals_as_the_development_build": (
        lambda: crafted_list(manifest_hook=_drop_totals),
        5,
        "development build",
    ),
    "component_totals_do_not_add_up_to_file_list": (
        lambda: crafted_list(manifest_hook=_add_to_totals(files=1)),
        5,
        "the components hold 5 files",
    ),
    # Someone without the key changes a member after signing.
    "list_changed_after_signing": (
        lambda: crafted_list(after_signing=_replace_member(FILE_LIST, _swap_digit)),
        4,
        f"{FILE_LIST}: sha256",
    ),
    "list_dropped_a_line_after_signing": (
        lambda: crafted_list(after_signing=_replace_member(FILE_LIST, lambda d: d[: d.index(b"\n") + 1])),
        5,
        "fileList.size",
    ),
}


def _swap_digit_sums(data: bytes) -> bytes:
    return (b"0" if data[:1] != b"0" else b"1") + data[1:]


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def _refused(result: Any, code: int, word: str, name: str) -> None:
    assert result.exit_code == code, f"{name}: exit {result.exit_code}: {result.output}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_the_untouched_kit_verifies_and_lists_its_files(tmp_path: Path, trusted: Path) -> None:
    kit = tmp_path / "good.kit.tar.zst"
    kit.write_bytes(crafted_list())
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo")
    assert result.exit_code == 0, result.output
    report = run_kit("inspect", kit, "--json", "--files")
    assert report.exit_code == 0, report.output
    listed = json.loads(report.stdout)
    assert [f["path"] for f in listed["files"]] == ["docs/a.md", "docs/b.sql", "docs/c.txt", "docs/z.bin"]
    assert listed["payloadBytes"] == sum(f["size"] for f in listed["files"])
    # Without --files: the same totals, from the signed manifest alone, and no listing.
    summary = json.loads(run_kit("inspect", kit, "--json").stdout)
    assert "files" not in summary and summary["fileCount"] == 4
    assert summary["components"][0]["files"] == 4 and summary["payloadBytes"] == listed["payloadBytes"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_lying_file_list_is_refused(name: str, tmp_path: Path, trusted: Path) -> None:
    make, code, word = CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(make())
    before = sorted(tmp_path.rglob("*"))
    result = run_kit("verify", kit, "--key", trusted, "--product", "demo")
    _refused(result, code, word, name)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("name", ["line_with_a_space", "list_changed_after_signing", "manifest_lists_files_inline"])
def test_lying_file_list_is_refused_by_inspect_too(name: str, tmp_path: Path) -> None:
    """inspect --files lists every file: it reads the list under the same rules, key or no key."""
    make, code, word = CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(make())
    _refused(run_kit("inspect", kit, "--files"), code, word, name)
    _refused(run_kit("inspect", kit, "--files", "--json"), code, word, name)


@pytest.mark.parametrize("name", ["line_with_a_space", "list_changed_after_signing"])
def test_inspect_without_files_does_not_read_the_list(name: str, tmp_path: Path, trusted: Path) -> None:
    """Without --files, inspect shows what the signed manifest says (totals included) and reads no file list: a
    broken list is reported by whatever reads it (verify, inspect --files), not by a summary that never did."""
    make, code, word = CASES[name]
    kit = tmp_path / f"{name}.kit.tar.zst"
    kit.write_bytes(make())
    for trust in ((), ("--key", trusted)):
        result = run_kit("inspect", kit, *trust)
        assert result.exit_code == 0 and result.stderr == "", result.output
        assert "component docs (doc): 4 files" in result.stdout and "docs/a.md" not in result.stdout
        _refused(run_kit("inspect", kit, "--files", *trust), code, word, name)


def test_file_count_over_max_members_names_the_option(tmp_path: Path, trusted: Path) -> None:
    kit = tmp_path / "four.kit.tar.zst"
    kit.write_bytes(crafted_list())
    result = run_kit("verify", kit, "--key", trusted, "--max-members", "3")
    _refused(result, 5, "--max-members", "count over the cap")
    assert "fileList.count is 4" in result.stderr
    assert run_kit("verify", kit, "--key", trusted, "--max-members", "4").exit_code == 0


def test_index_listing_a_payload_member_is_refused(tmp_path: Path, trusted: Path) -> None:
    """Payload files are placed by the signed list only: an index that lists one is refused before use."""
    data = crafted_list()
    index_offset = int.from_bytes(data[-8:], "little")
    index = json.loads(data[index_offset + 8 : len(data) - zstdframes.FOOTER_SIZE])
    index["members"].insert(0, {"at": 0, "frame": 0, "path": "docs/a.md", "sha256": "0" * 64, "size": 1})
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    kit = tmp_path / "payload-in-index.kit.tar.zst"
    kit.write_bytes(
        data[:index_offset]
        + zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, body)
        + zstdframes.footer_frame(index_offset)
    )
    _refused(run_kit("verify", kit, "--key", trusted), 5, "not a metadata member", "payload in index")


def test_the_metadata_is_small_and_the_statement_names_two_subjects(tmp_path: Path) -> None:
    """manifest.json carries no per-file entry; the statement's subjects are the list and SHA256SUMS."""
    many = [(f"docs/f{n:04d}.md", b"x" * (n % 7)) for n in range(600)]
    kit = tmp_path / "many.kit.tar.zst"
    kit.write_bytes(crafted_list(files=many))
    from kitbuilder.archive import reader
    from kitbuilder.archive.reader import Caps
    from kitbuilder.core.dsse import Envelope
    from kitbuilder.core.statement import Statement
    from kitbuilder.ops.kitfile import open_kit, read_metadata

    with open_kit(kit) as stream:
        metadata = read_metadata(stream, Caps())
        # A kit file's list is parsed as it is read, not kept among the members: read it again for the test.
        assert FILE_LIST not in metadata.members
        listed = reader.read_member(stream, metadata.location.index.locate(FILE_LIST), Caps())
    manifest = json.loads(metadata.members[MANIFEST_JSON])
    assert "files" not in manifest and manifest["fileList"]["count"] == 600
    assert len(metadata.members[MANIFEST_JSON]) < 4096
    statement = Statement.from_bytes(
        Envelope.from_bytes(metadata.members["manifest.dsse.json"], what="dsse").payload, what="statement"
    )
    assert {s.name: s.sha256 for s in statement.subjects} == {
        FILE_LIST: hashlib.sha256(listed).hexdigest(),
        SHA256SUMS: hashlib.sha256(metadata.members[SHA256SUMS]).hexdigest(),
    }
    assert len(listed.splitlines()) == 600 and listed.endswith(b"\n")
    assert metadata.location.index.complete and len(metadata.location.index.members) == 600 + 5


def test_inspect_without_files_still_checks_the_signed_metadata_it_reads(tmp_path: Path, trusted: Path) -> None:
    """Leaving the file list unread leaves out only the checks that need it: a junk SHA256SUMS.sig by the trusted
    build key fails inspect --key as it fails verify (exit 3, one line), list or no list."""
    kit = tmp_path / "junk-sig.kit.tar.zst"
    kit.write_bytes(crafted_list(after_signing=_replace_member(SHA256SUMS_SIG, lambda data: bytes(len(data)))))
    assert run_kit("verify", kit, "--key", trusted, "--product", "demo").exit_code == 3
    for extra in ((), ("--files",)):
        result = run_kit("inspect", kit, "--key", trusted, *extra)
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith("kit: signatures not verified: ") and result.stderr.count("\n") == 1
        assert SHA256SUMS_SIG in result.stderr
        # stdout must not suggest the key was missing: it was given, and the check failed
        assert "(NOT verified)" in result.stdout and "pass --key" not in result.stdout
    plain = run_kit("inspect", kit)
    assert plain.exit_code == 0 and "(unverified: pass --key" in plain.stdout  # no key: nothing verified, and says so
