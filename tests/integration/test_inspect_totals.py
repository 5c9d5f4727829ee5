"""kit inspect shows a kit from its signed manifest: components with the payload totals kit build signs in format 2,
and lists every file only with --files (the file list is then read and checked as kit verify reads it).

Real kits from `kit build` (full and delta) and the committed format-1 vectors; the hostile side (totals that lie,
a list inspect does not read without --files) is in tests/integration/test_hostile_format2_filelist.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from kitbuilder.core import schemas
from kitbuilder.core.manifest import MANIFEST_JSON
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.kits import kit_members

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _totals_of(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each component's files, bytes and byRole, counted from a --files listing."""
    totals: dict[str, dict[str, Any]] = {}
    for item in files:
        component = totals.setdefault(item["component"], {"files": 0, "bytes": 0, "byRole": {}})
        role = component["byRole"].setdefault(item["role"], {"files": 0, "bytes": 0})
        for where in (component, role):
            where["files"] += 1
            where["bytes"] += item["size"]
    return totals


def _components(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: {k: c[k] for k in ("files", "bytes", "byRole")} for c in report["components"]}


def test_build_signs_the_totals_the_file_list_holds(kit_env: KitEnv, built_kit: Path) -> None:
    signed = json.loads(kit_members(built_kit)[MANIFEST_JSON])
    code, listed = run_json("inspect", built_kit, "--key", kit_env.ed_pub, "--files")
    assert code == 0
    counted = _totals_of(listed["files"])
    assert {c["id"]: {k: c[k] for k in ("files", "bytes", "byRole")} for c in signed["components"]} == counted
    # The default report: the same totals from the signed manifest alone, no listing.
    code, summary = run_json("inspect", built_kit, "--key", kit_env.ed_pub)
    assert code == 0
    assert "files" not in summary and _components(summary) == counted
    assert summary["fileCount"] == len(listed["files"]) == signed["fileList"]["count"]
    assert summary["payloadBytes"] == sum(f["size"] for f in listed["files"])
    assert summary["roles"] == listed["roles"]
    for report in (summary, listed):
        assert schemas.first_error("inspect-report", report) is None


def test_text_lists_files_only_with_the_flag(kit_env: KitEnv, built_kit: Path) -> None:
    listed = json.loads(run_kit("inspect", built_kit, "--files", "--json").stdout)["files"]
    summary = run_kit("inspect", built_kit, "--key", kit_env.ed_pub)
    full = run_kit("inspect", built_kit, "--key", kit_env.ed_pub, "--files")
    assert summary.exit_code == full.exit_code == 0
    assert f"{len(listed)} files" in summary.stdout
    for component, totals in _totals_of(listed).items():
        assert f"component {component} " in summary.stdout and f"{totals['files']} files, {totals['bytes']}" in (
            summary.stdout
        )
    assert not any(f["path"] in summary.stdout for f in listed)
    # --files adds exactly one line per file, in archive order, and changes nothing else.
    extra = [line for line in full.stdout.splitlines() if line not in summary.stdout.splitlines()]
    assert [line.split()[-1] for line in extra] == [f["path"] for f in listed]
    assert [int(line.split()[0]) for line in extra] == [f["size"] for f in listed]


def test_a_delta_kit_states_its_own_totals_by_role(kit_env: KitEnv) -> None:
    base, new, delta = (kit_env.root / n for n in ("base.kit.tar.zst", "new.kit.tar.zst", "delta.kit.tar.zst"))
    build = ("build", kit_env.spec, "--key", kit_env.ed_key)
    assert run_kit(*build, "--out", base, env={"SOURCE_DATE_EPOCH": "1700000000"}).exit_code == 0
    (kit_env.root / "src/docs/NEW.md").write_text("new file\n")
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    made = run_kit(*build, "--delta-from", base, "--out", delta, "--full-out", new, env={"SOURCE_DATE_EPOCH": "1"})
    assert made.exit_code == 0, made.output
    code, listed = run_json("inspect", delta, "--key", kit_env.ed_pub, "--files")
    assert code == 0
    counted = _totals_of(listed["files"])
    # The changed group travels as content (docs/delta.md, "Content deltas"): its changed files as patches, the
    # new file whole; a verbatim delta would carry the frame (delta-frame).
    assert set(counted["kit-delta"]["byRole"]) == {"delta-patch", "delta-file", "delta-target"}
    summary = run_json("inspect", delta, "--key", kit_env.ed_pub)[1]
    # Every component with what the delta itself holds of it: the target's components hold nothing here (their
    # frames and contents travel wrapped, as files of kit-delta).
    stated = _components(summary)
    assert set(counted) <= set(stated)
    assert stated == {c: counted.get(c, {"files": 0, "bytes": 0, "byRole": {}}) for c in stated}
    assert Counter(f["role"] for f in listed["files"]) == {r: t["files"] for r, t in summary["roles"].items()}
    # The target the delta carries under delta/target/ states its own totals, which the full build signed.
    target = json.loads(kit_members(delta)[f"delta/target/{MANIFEST_JSON}"])
    assert target["components"] == json.loads(kit_members(new)[MANIFEST_JSON])["components"]


def test_a_format1_kit_shows_totals_counted_from_its_inline_files() -> None:
    kit = VECTORS / "valid-minimal.kit.tar.zst"
    code, listed = run_json("inspect", kit, "--files")
    assert code == 0
    code, summary = run_json("inspect", kit)
    assert code == 0 and "files" not in summary
    assert _components(summary) == _totals_of(listed["files"]) and summary["fileCount"] == len(listed["files"])
