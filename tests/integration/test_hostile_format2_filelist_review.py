"""Review of the revised format-2 readers (the signed file list, docs/format.md §0.7): cases that got past them.

Each kit is crafted with the real writer (tests/factories/filelist_kits.py) and refused through the real CLI with
its documented exit code and one line on stderr naming the member, never exit 70, and nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect
from kitbuilder.core import jsonio
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, SHA256SUMS
from tests.factories.cli import KitEnv, run_kit
from tests.factories.crafted_apply import craft_apply_kit, good_migration
from tests.factories.deltas import craft_delta
from tests.factories.filelist_kits import crafted_list
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.kits import kit_members


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
    _refused(run_kit("inspect", kit, "--files"), 5, f"{FILE_LIST} line 1")
    assert sorted(tmp_path.rglob("*")) == before


def _format1_manifest(members: dict[str, bytes]) -> None:
    """After signing: manifest.json replaced by a well-formed format-1 manifest listing a file inline, SHA256SUMS
    emptied (a format-1 reading of a format-2 index has no file count to size it by); the index stays format 2."""
    manifest = json.loads(members[MANIFEST_JSON])
    manifest["apiVersion"] = "kitbuilder/v1"
    del manifest["fileList"], manifest["frames"]
    manifest["build"]["compression"]["multithreaded"] = False
    manifest["build"]["mtime"] = 0
    manifest["components"] = [{"id": c["id"], "role": c["role"]} for c in manifest["components"]]  # no totals in v1
    frame = {"offset": 0, "length": 20, "sha256": "1" * 64}
    manifest["files"] = [
        {"path": "docs/a.md", "size": 6, "sha256": "0" * 64, "role": "doc", "component": "docs", "frame": frame}
    ]
    members[MANIFEST_JSON] = jsonio.dump_pretty(manifest)
    members[SHA256SUMS] = b""


def test_format2_index_with_a_format1_manifest_is_refused_without_a_key(tmp_path: Path, trusted: Path) -> None:
    """docs/format.md §0: a reader MUST refuse a kit whose index and manifest are not of the same format. inspect
    without a key checks no signature, so the rule must hold where the metadata is read, not only where it is
    checked against the signed manifest; else inspect lists files placed by a format the kit is not in."""
    kit = tmp_path / "mixed.kit.tar.zst"
    kit.write_bytes(crafted_list(after_signing=_format1_manifest))
    for command in (("inspect", kit), ("inspect", kit, "--json"), ("verify", kit, "--key", trusted)):
        result = run_kit(*command)
        assert result.exit_code == 5, f"{command}: {result.output}"
        if "--json" not in command:
            _refused(result, 5, "kit index is format 2", f"{MANIFEST_JSON} is format 1")


def _build(kit_env: KitEnv, out: Path, epoch: str) -> None:
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, env={"SOURCE_DATE_EPOCH": epoch})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("field", "change", "code", "said"),
    [
        ("count", 1, 5, "fileList.count"),
        ("payloadBytes", 1, 5, "fileList.payloadBytes"),
        ("sha256", "0" * 64, 4, "fileList.sha256"),
    ],
)
def test_delta_target_file_list_against_its_own_manifest_names_it(
    kit_env: KitEnv, tmp_path: Path, field: str, change: Any, code: int, said: str
) -> None:
    """A signed delta whose target manifest's fileList does not describe the target file list it ships: refused
    naming delta/target/manifest.json, the manifest that says so (not the delta's own manifest.json)."""
    base, full = tmp_path / "base.kit.tar.zst", tmp_path / "full.kit.tar.zst"
    _build(kit_env, base, "1700000000")
    (kit_env.root / "src/docs/NEW.md").write_text("new file\n")
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    _build(kit_env, full, "1700086400")
    target = json.loads(kit_members(full)[MANIFEST_JSON])
    record, components = target["fileList"], target["components"]
    record[field] = record[field] + change if isinstance(change, int) else change
    if isinstance(change, int):
        # The components' totals say the same (they must add up to fileList): the lie is about the list itself.
        totals = "files" if field == "count" else "bytes"
        components[0][totals] += change
        next(iter(components[0]["byRole"].values()))[totals] += change
    edit = {"fileList": record, "components": components}
    delta = craft_delta(kit_env.ed_key, base, full, tmp_path / "delta.kit.tar.zst", edit_target=edit)
    out = tmp_path / "patched.kit.tar.zst"
    result = run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--out", out)
    _refused(result, code, f"delta/target/{FILE_LIST}", f"delta/target/{MANIFEST_JSON} {said}")
    assert not out.exists()


def test_seed_line_nested_past_the_recursion_limit_is_refused_before_the_first_statement(
    tmp_path: Path, trusted: Path, db_url: str
) -> None:
    """The same class as the file list's nested line, in the other line-by-line JSON reader of signed payload: an
    ndjson seed line of 1,500 "[" is a format error naming the line, before any statement (was exit 70)."""
    component, files = good_migration("m1", "1")
    seed = {"id": "s1", "role": "seed", "phase": "2", "options": {"table": "items", "key": ["id"]}}
    kit = craft_apply_kit(
        tmp_path / "seed.kit.tar.zst", [component, seed], {**files, "seeds/s1/rows.ndjson": ("s1", b"[" * 1500 + b"\n")}
    )
    assert run_kit("verify", kit, "--key", trusted).exit_code == 0
    result = run_kit("apply", kit, "--key", trusted, "--db", db_url, "--artifacts", tmp_path / "a")
    _refused(result, 5, "seed s1", "rows.ndjson:1")
    if db_url.startswith("sqlite:///") and Path(db_url[len("sqlite:///") :]).exists():
        database = connect(db_url, read_only=True)
        try:
            assert not database.table_exists("kit_runs")
        finally:
            database.close()
