"""Review of the revised format-2 readers (the signed file list, docs/format.md §0.7): cases that got past them.

Each kit is crafted with the real writer (tests/factories/filelist_kits.py) and refused through the real CLI with
its documented exit code and one line on stderr naming the member, never exit 70, and nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kitbuilder.core.filelist import FILE_LIST
from tests.conftest import run_kit
from tests.factories.filelist_kits import crafted_list
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


def _refused(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output


def _nested_first_line(data: bytes) -> bytes:
    """The first line replaced by an array nested deeper than Python's recursion limit (still under the size cap)."""
    return b"[" * 1500 + b"\n" + data[data.index(b"\n") + 1 :]


def test_deeply_nested_file_list_line_is_a_format_error(tmp_path: Path, trusted: Path) -> None:
    """A line that is not the one form is parsed again only to name the fault: that parse is bounded as every other
    JSON parse (exit 5 naming the line), for verify (a hostile signer) and inspect without a key (anyone)."""
    kit = tmp_path / "nested.kit.tar.zst"
    kit.write_bytes(crafted_list(list_hook=_nested_first_line))
    before = sorted(tmp_path.rglob("*"))
    _refused(run_kit("verify", kit, "--key", trusted, "--product", "demo"), 5, f"{FILE_LIST} line 1")
    _refused(run_kit("inspect", kit), 5, f"{FILE_LIST} line 1")
    assert sorted(tmp_path.rglob("*")) == before
