"""Component inventories: the kit SBOM and the provenance name each component by the digest of its SHA256SUMS
lines, and stock tools recompute it from an extracted kit (docs/sbom.md, "Checking with stock tools")."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core.manifest import Component, FileEntry, KitInfo, Manifest
from kitbuilder.core.sbom import (
    KIT_SBOM_PATH,
    Inventory,
    KitComponent,
    component_inventories,
    render_kit_sbom,
)
from kitbuilder.ops.build import seal
from tests.factories.cli import KitEnv, run_json, run_kit
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.kits import TEST_BUILD, write_payload

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}

# The auditor's check from docs/sbom.md, run as written: for every kit component of the SBOM, the digest of its
# lines of SHA256SUMS (which files are the component's, from the signed file list manifest.files.jsonl) against
# the SBOM's hash.
STOCK_CHECK = r"""
set -eu
jq -r '.components[] | select(."bom-ref" | startswith("component:")) | "\(.hashes[0].content) \(.name)"' \
    sbom/kit.cdx.json |
while read -r digest c; do
  jq -r --arg c "$c" 'select(.component == $c) | "\(.sha256)  \(.path)"' manifest.files.jsonl \
    | { grep -Fxf - SHA256SUMS || true; } | sha256sum | grep -q "^$digest " && echo "ok $c" || echo "MISMATCH $c"
done
"""

# The provenance check from docs/provenance.md, with the `kit inspect --provenance --json` output in report.json.
PROVENANCE_CHECK = r"""
set -eu
jq -r '.provenance.inputs[] | "\(.digest.sha256) \(.name)"' report.json |
while read -r digest name; do
  image=$(jq -r --arg n "$name" '.images[]? | select(.ref == $n) | .digest | ltrimstr("sha256:")' manifest.json)
  if [ -n "$image" ]; then
    [ "$image" = "$digest" ] && echo "ok $name" || echo "MISMATCH $name"
  else
    jq -r --arg c "$name" 'select(.component == $c) | "\(.sha256)  \(.path)"' manifest.files.jsonl \
      | { grep -Fxf - SHA256SUMS || true; } | sha256sum | grep -q "^$digest " \
      && echo "ok $name" || echo "MISMATCH $name"
  fi
done
"""

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("zstd", "tar", "sha256sum", "jq", "grep")),
    reason="needs zstd, tar, sha256sum, jq and grep on PATH",
)


def _spec_with_nested_and_empty_components(kit_env: KitEnv) -> None:
    """Beside the usual ones: a component whose dest lies inside another's, and one whose source is empty."""
    (kit_env.root / "src/deep").mkdir()
    (kit_env.root / "src/deep/inner.md").write_text("inside docs/operator, but not operator's\n")
    (kit_env.root / "src/empty").mkdir()
    kit_env.spec.write_text(
        kit_env.spec.read_text()
        + "  - id: deep\n    source: src/deep\n    dest: docs/operator/deep\n"
        + "  - id: empty\n    source: src/empty\n"
    )


def _extract(kit: Path, target: Path) -> Path:
    target.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}'", shell=True, check=True)
    return target


def test_stock_tools_recompute_every_component_inventory(kit_env: KitEnv, tmp_path: Path) -> None:
    _spec_with_nested_and_empty_components(kit_env)
    kit = kit_env.kit()
    built = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit, env=SDE)
    assert built.exit_code == 0, built.output
    out = _extract(kit, tmp_path / "out")
    checked = subprocess.run(["bash", "-c", STOCK_CHECK], cwd=out, capture_output=True, text=True, check=True)
    assert checked.stdout.split("\n") == [
        "ok 21-101-shard-index",
        "ok object-store",
        "ok operator",
        "ok deep",
        "ok empty",
        "",
    ], checked.stderr
    sbom = json.loads((out / KIT_SBOM_PATH).read_text())
    groups = {c["name"]: c for c in sbom["components"]}
    # Nothing per file: the SBOM's size does not follow the file count.
    assert not any("components" in c for c in groups.values())
    counts = {name: {p["name"]: p["value"] for p in c["properties"]} for name, c in groups.items()}
    assert counts["operator"]["kitbuilder:fileCount"] == "2" and counts["deep"]["kitbuilder:fileCount"] == "1"
    assert counts["empty"]["kitbuilder:fileCount"] == "0" and counts["empty"]["kitbuilder:size"] == "0"
    # The provenance names each spec component by the same digest, and its source relative to the spec.
    code, report = run_json("inspect", kit, "--key", kit_env.ed_pub, "--provenance", "--sbom")
    assert code == 0 and report["sbom"]["kitSbom"]["matchesManifest"] is True
    inputs = {i["name"]: i for i in report["provenance"]["inputs"]}
    assert set(inputs) == {"21-101-shard-index", "object-store", "operator", "deep", "empty"}
    for name, item in inputs.items():
        assert item["digest"]["sha256"] == groups[name]["hashes"][0]["content"]
    assert inputs["deep"]["uri"] == "file:src/deep"
    (out / "report.json").write_text(json.dumps(report))
    audited = subprocess.run(["bash", "-c", PROVENANCE_CHECK], cwd=out, capture_output=True, text=True, check=True)
    assert audited.stdout.splitlines() == [f"ok {name}" for name in inputs], audited.stderr
    # A provenance naming another inventory is caught the same way.
    report["provenance"]["inputs"][0]["digest"]["sha256"] = "0" * 64
    (out / "report.json").write_text(json.dumps(report))
    audited = subprocess.run(["bash", "-c", PROVENANCE_CHECK], cwd=out, capture_output=True, text=True, check=True)
    assert audited.stdout.splitlines()[0] == "MISMATCH 21-101-shard-index"


FILES = {"docs/a.md": b"# Runbook\n", "docs/b.md": b"second page\n"}


def _forged_kit(out: Path, sbom_inventory: Inventory) -> Path:
    """A kit signed by the trusted key whose SBOM states ``sbom_inventory`` for its docs component."""
    sbom = render_kit_sbom(
        name="forged",
        version="1.0.0",
        product="demo",
        tool_version="test",
        created=None,
        components=[KitComponent("docs", "doc", inventory=sbom_inventory)],
        images=[],
        shipped=[],
        shipped_sha256={},
    )
    with out.open("wb") as sink:
        writer = KitWriter2(sink, level=3)
        entries, frames = write_payload(
            writer,
            [
                *((path, data, "doc", "docs") for path, data in FILES.items()),
                (KIT_SBOM_PATH, sbom, "sbom", "kit-sbom"),
            ],
        )
        manifest = Manifest(
            kit=KitInfo("forged", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
            build=TEST_BUILD,
            components=(Component("docs", "doc"), Component("kit-sbom", "sbom")),
            files=entries,
            frames=frames,
            format_version=2,
        )
        seal(writer, manifest, [RELEASE])
        writer.finish()
    return out


def _true_inventory() -> Inventory:
    """The inventory of the forged kit's docs component, as its signed manifest will list the files."""
    return component_inventories(
        FileEntry(path, len(data), hashlib.sha256(data).hexdigest(), "doc", "docs") for path, data in FILES.items()
    )["docs"]


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("right", {}),
        ("one_file_fewer", {"files": 1}),
        ("other_size", {"bytes": 1}),
        ("other_digest", {"sha256": "0" * 64}),
    ],
)
def test_inspect_compares_the_stated_inventory_with_the_signed_files(
    name: str, change: dict[str, Any], tmp_path: Path
) -> None:
    stated = dataclasses.replace(_true_inventory(), **change)
    kit = _forged_kit(tmp_path / f"{name}.kit.tar.zst", stated)
    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    code, report = run_json("inspect", kit, "--key", pub, "--sbom")
    assert code == 0
    assert report["sbom"]["kitSbom"]["matchesManifest"] is (name == "right")
    text = run_kit("inspect", kit, "--key", pub, "--sbom")
    assert ("DIFFERS from the manifest" in text.stdout) is (name != "right"), text.stdout
    # The stock-tool check compares the digest (which fixes the lines, hence the count and the paths).
    out = _extract(kit, tmp_path / "out")
    checked = subprocess.run(["bash", "-c", STOCK_CHECK], cwd=out, capture_output=True, text=True, check=True)
    assert checked.stdout == ("MISMATCH docs\n" if name == "other_digest" else "ok docs\n")
