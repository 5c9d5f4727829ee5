"""kit diff on constructed pairs: metadata only, every kind of change named."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories.cli import KitEnv, run_json, run_kit


def _build(kit_env: KitEnv, name: str, *keys: Path) -> Path:
    out = kit_env.root / name
    args: list[object] = ["build", kit_env.spec, "--out", out]
    for key in keys or (kit_env.ed_key,):
        args += ["--key", key]
    result = run_kit(*args)
    assert result.exit_code == 0, result.output
    return out


def test_diff_names_added_removed_changed_and_kit_fields(kit_env: KitEnv) -> None:
    old = _build(kit_env, "old.kit.tar.zst")
    src = kit_env.root / "src"
    (src / "docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, apply, then check the report.\n")
    (src / "docs/NEW.md").write_text("new\n")
    (src / "migrations/21-101/revert.sql").unlink()
    spec = (
        kit_env.spec.read_text().replace("sequence: 1", "sequence: 2").replace('version: "1.0.0"', 'version: "1.1.0"')
    )
    kit_env.spec.write_text(spec)
    new = _build(kit_env, "new.kit.tar.zst", kit_env.ed_key, kit_env.ec_key)
    code, document = run_json("diff", old, new)
    assert code == 0
    assert [f["path"] for f in document["files"]["added"]] == ["docs/operator/NEW.md"]
    assert [f["path"] for f in document["files"]["removed"]] == ["migrations/21-101-shard-index/revert.sql"]
    assert [f["path"] for f in document["files"]["changed"]] == ["docs/operator/RUNBOOK.md", "sbom/kit.cdx.json"]
    assert document["files"]["unchanged"] == 4
    assert document["kit"]["sequence"] == {"old": 1, "new": 2}
    assert document["kit"]["version"] == {"old": "1.0.0", "new": "1.1.0"}
    assert len(document["signers"]["added"]) == 1 and document["signers"]["verified"] is False


def test_diff_with_trust_verifies_both_sides(kit_env: KitEnv) -> None:
    old = _build(kit_env, "old.kit.tar.zst")
    new = _build(kit_env, "new.kit.tar.zst", kit_env.ec_key)
    code, document = run_json("diff", old, new, "--key", kit_env.ed_pub, "--key", kit_env.ec_pub, "--threshold", "1")
    assert code == 0
    assert document["signers"]["verified"] is True
    assert document["files"]["added"] == [] and document["files"]["changed"] == []
    assert run_kit("diff", old, new, "--key", kit_env.ed_pub).exit_code == 3


def test_diff_reads_no_payload(kit_env: KitEnv, tmp_path: Path) -> None:
    old = _build(kit_env, "old.kit.tar.zst")
    data = bytearray(old.read_bytes())
    data[600:700] = bytes(100)  # inside the first payload frame
    damaged = tmp_path / "damaged.kit.tar.zst"
    damaged.write_bytes(bytes(data))
    result = run_kit("diff", old, damaged, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["files"]["changed"] == []


def test_diff_of_a_format_1_and_a_format_2_kit(kit_env: KitEnv) -> None:
    """Files compare alike across formats; the frame summary needs format 2 on both sides."""
    old = Path(__file__).parent.parent / "vectors/valid-minimal.kit.tar.zst"
    new = _build(kit_env, "new.kit.tar.zst")
    code, document = run_json("diff", old, new, "--key", kit_env.ed_pub)
    assert code == 0, document
    assert document["frames"] is None
    assert document["files"]["added"] and document["signers"]["verified"] is True
    from kitbuilder.core import schemas

    assert schemas.first_error("diff-report", document) is None
