"""The file list's size cap (docs/format.md §0.7, §0.9) against the longest line its grammar admits."""

from __future__ import annotations

import re
from pathlib import Path

from kitbuilder.core import filelist
from kitbuilder.core.filelist import FILE_LIST, FileEntry
from kitbuilder.core.manifest import MetadataBudget

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _longest() -> bytes:
    """A line of the one form with every field at its longest: 16-digit integers (size at 2^53-1), a 255-byte
    path that fits ustar (154-byte prefix, 100-byte name), a 100-character component and a 64-character role."""
    path = "p" * 154 + "/" + "n" * 100
    entry = FileEntry(path, filelist.MAX_SAFE, "f" * 64, "r" * 64, "C" * 100, frame=10**15, at=10**15)
    return entry.line().encode()


def test_the_longest_line_of_the_grammar_fits_the_documented_cap() -> None:
    line = _longest()
    assert filelist._LINE.fullmatch(line) is not None  # the reader's one form admits it
    documented = re.search(r"A line is at most (\d+) bytes", (DOCS / "format.md").read_text())
    assert documented is not None
    assert len(line) <= filelist.MAX_LINE_BYTES == int(documented.group(1))
    # So a list of N lines of any lengths the grammar admits is never refused by its size alone.
    for count in (1, 7, 50_000):
        budget = MetadataBudget(count, frames=1, format_version=2)
        assert budget.max_bytes(FILE_LIST) == count * filelist.MAX_LINE_BYTES >= count * len(line)
