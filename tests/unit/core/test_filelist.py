"""manifest.files.jsonl (docs/format.md §0.7): one byte form per list, every other form refused by line."""

from __future__ import annotations

import json

import pytest

from kitbuilder.core import checksums, filelist
from kitbuilder.core.filelist import FileEntry
from kitbuilder.core.manifest import Manifest
from kitbuilder.errors import FormatError, IntegrityError

FILES = (
    FileEntry("docs/a.md", 32, "a" * 64, "doc", "docs", frame=0, at=0),
    FileEntry(".github/b.yml", 0, "b" * 64, "doc", "docs", frame=0, at=1024),
    FileEntry("db/up.sql", 700, "c" * 64, "migration", "db", frame=1, at=0),
)
FRAMES = [2048, 2048]


def _parse(data: bytes, count: int = 3) -> tuple[FileEntry, ...]:
    return filelist.parse(data, count=count, frame_sizes=FRAMES)


def test_round_trip_is_the_one_byte_form() -> None:
    data = filelist.render(FILES)
    assert _parse(data) == FILES
    for line, entry in zip(data.splitlines(), FILES, strict=True):
        # Each line is the compact, sorted-key JSON of the entry: what any JSON library writes.
        item = {k: v for k, v in entry.to_json().items()}
        assert line == json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
    assert filelist.render(()) == b"" and filelist.parse(b"", count=0, frame_sizes=[]) == ()


def test_role_and_component_strings_are_shared() -> None:
    parsed = _parse(filelist.render(FILES))
    assert parsed[0].role is parsed[1].role and parsed[0].component is parsed[1].component


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.replace(b'"at":0,', b'"at": 0,', 1), "line 1: not in the one form"),
        (lambda d: d.replace(b'"size":32', b'"size":32.0', 1), "line 1: size: not an integer"),
        (lambda d: d.replace(b'"size":32', b'"size":-1', 1), "line 1: size: not an integer"),
        (lambda d: d.replace(b"docs/a.md", b"docs/\\u0061.md", 1), "line 1: not in the one form"),
        (lambda d: d.replace(b"docs/a.md", b"docs/../a.md", 1), "component '..' is not allowed"),
        (lambda d: d.replace(b"docs/a.md", b".kit-patch/a", 1), "reserved for kit's own state"),
        (lambda d: d.replace(b'"role":"doc"', b'"role":"Doc"', 1), "role 'Doc'"),
        (lambda d: d.replace(b'"frame":1', b'"frame":2', 1), "line 3: frame 2 is not one of"),
        (lambda d: d.replace(b'"at":1024', b'"at":1000', 1), "line 2: at 1000 is not a 512-byte boundary"),
        (lambda d: d.replace(b'"at":1024', b'"at":2048', 1), "line 2: at 2048"),
        (lambda d: d[:-1], "line 3: last line has no newline"),
        (lambda d: d + b"\n", "line 4: not a JSON object"),
        (lambda d: d.replace(b"\n", b"\r\n", 1), "line 1"),
        (lambda d: d.replace(b"docs/a.md", "docs/\u00e4.md".encode(), 1), "line 1"),
    ],
)
def test_any_other_form_is_refused_naming_the_line(change: object, message: str) -> None:
    data = change(filelist.render(FILES))  # type: ignore[operator]
    with pytest.raises(FormatError) as caught:
        _parse(data)
    assert message in str(caught.value)


def test_the_count_is_exact_and_bounds_the_work() -> None:
    data = filelist.render(FILES)
    with pytest.raises(FormatError, match="more than the 2 lines"):
        _parse(data, count=2)
    with pytest.raises(FormatError, match="3 lines, but manifest.json fileList.count says 4"):
        _parse(data, count=4)


def test_sha256sums_is_compared_by_a_merge_in_path_order() -> None:
    sums = checksums.render((f.path, f.sha256) for f in FILES)
    checksums.check_listing(FILES, sums, what="x")
    with pytest.raises(IntegrityError, match="differs from the signed file list at db/up.sql"):
        checksums.check_listing(FILES, sums.replace(b"c" * 64, b"d" * 64), what="x")
    with pytest.raises(IntegrityError, match="'zz'"):
        checksums.check_listing(FILES, sums + b"e" * 64 + b"  zz\n", what="x")
    with pytest.raises(FormatError, match="docs/a.md listed twice"):
        checksums.check_listing((*FILES, FILES[0]), sums, what="x")


def test_a_development_build_manifest_is_refused() -> None:
    document = {"apiVersion": "kitbuilder/v2", "files": []}
    with pytest.raises(FormatError, match="development build of format 2.*rebuild"):
        Manifest.from_json(document)


def test_a_list_in_pieces_parses_as_the_whole_wherever_it_is_cut() -> None:
    """Read frame by frame, a line may span two pieces (or many): the entries are the same."""
    data = filelist.render(FILES)
    for cut in range(1, len(data)):
        assert filelist.parse([data[:cut], data[cut:]], count=3, frame_sizes=FRAMES) == FILES
    assert filelist.parse([data[n : n + 7] for n in range(0, len(data), 7)], count=3, frame_sizes=FRAMES) == FILES


def test_a_piece_longer_than_the_parse_slice_parses_as_the_whole() -> None:
    """A decoded frame (up to 4 MiB) is parsed a slice at a time: lines cut by a slice boundary inside one piece,
    and a bad line past the first slice, are what they are in the whole list."""
    files = tuple(
        FileEntry(f"docs/d{n % 97:02d}/page-{n:06d}.md", n % 5, f"{n:064x}", "doc", "docs", frame=0, at=n * 512)
        for n in range(6000)
    )
    frames = [6000 * 512]
    data = filelist.render(files)
    assert len(data) > 3 * filelist._SLICE
    assert filelist.parse([data], count=len(files), frame_sizes=frames) == files
    lines = data.split(b"\n")
    lines[5000] = lines[5000].replace(b'"size":', b'"size":-')
    bad = b"\n".join(lines)
    with pytest.raises(FormatError, match="line 5001:"):
        filelist.parse([bad], count=len(files), frame_sizes=frames)


def test_a_run_without_a_newline_is_refused_at_one_line_of_bytes() -> None:
    """A partial line is held only up to the longest line: a piece running on is refused before it ends."""
    data = filelist.render(FILES)
    with pytest.raises(FormatError, match=r"line 2: longer than 615 bytes"):
        filelist.parse([data[: data.index(b"\n") + 1], b"{" * 700, b"x" * 1000], count=3, frame_sizes=FRAMES)


def test_the_table_hands_out_the_entries_and_shares_columns() -> None:
    table = filelist.FileTable.of(FILES)
    assert len(table) == 3 and table[1] == FILES[1] and table[-1] == FILES[-1] and table[0:2] == FILES[0:2]
    assert list(table) == list(FILES) and table.sha256(2) == "c" * 64 and table.payload_bytes() == 732
    renamed = table.with_kinds([("doc", "x")] * 3)
    assert renamed.paths is table.paths and [f.component for f in renamed] == ["x"] * 3
    with pytest.raises(IndexError):
        table[3]
    lines = [f"{f.sha256}  {f.path}\n".encode() for f in sorted(FILES, key=lambda f: f.path)]
    assert checksums.render_files(table) == b"".join(lines) == checksums.render((f.path, f.sha256) for f in FILES)
