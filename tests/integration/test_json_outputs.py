"""Every `--json` output of kit, produced by running the command, matches its schema in schemas/.

The schemas are the contract scripts rely on; each success shape and the
shared failure document is checked here against real output, and a command
that gains --json without a schema fails the suite. Image commands are in
tests/images/test_json_outputs_images.py (they need the image fixtures).
"""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import click
import pytest
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from kitbuilder.apply.db import connect
from kitbuilder.cli import main
from kitbuilder.core import schemas
from tests.factories.apply_kits import write_apply_kit_source
from tests.factories.cli import KitEnv, apply_json, run_json, run_kit
from tests.factories.keys import ed25519_key, write_pair

# Every command with a --json option → the schema its output follows. A new command needs an entry (and a schema).
COMMAND_SCHEMAS = {
    "apply": "apply-report",
    "build": "build-report",
    "diff": "diff-report",
    "images export": "images-export-report",
    "images push": "images-push-report",
    "inspect": "inspect-report",
    "keygen": "keygen-report",
    "patch": "patch-report",
    "repair": "repair-report",
    "rollback": "rollback-report",
    "sbom": "sbom-report",
    "status": "status-report",
    "trust init": "trust-report",
    "trust rotate": "trust-report",
    "trust update": "trust-report",
    "verify": "verify-report",
}
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def assert_matches(name: str, document: Any) -> None:
    """``document`` follows schema ``name``, and the schema is closed: an unknown top-level field is refused."""
    if schemas.first_error(name, document) is not None:
        pytest.fail(f"{name}: {_explain(name, document)}")
    assert isinstance(document, dict)
    assert schemas.first_error(name, {**document, "unexpectedField": 1}) is not None, f"{name} accepts any field"


def _explain(name: str, document: Any) -> str:
    """The violation in the oneOf branch the document comes closest to (fewest errors), not "valid under none"."""
    error = next(Draft7Validator(_schema_document(name)).iter_errors(document))
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        error = min(branches.values(), key=len)[0]
    return f"{error.json_path}: {error.message[:300]}"


def _json(*args: Any, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = run_kit(*args, "--json", env=env)
    return result.exit_code, json.loads(result.stdout)


def _schema_document(name: str) -> dict[str, Any]:
    text = resources.files("kitbuilder.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _json_commands() -> set[str]:
    found: set[str] = set()

    def walk(command: click.Command, name: str) -> None:
        if isinstance(command, click.Group):
            # Through the group's own listing: kit's commands are registered when first asked for (KitGroup), so
            # ``commands`` holds only those some earlier test happened to run.
            context = click.Context(command)
            for sub_name in command.list_commands(context):
                sub = command.get_command(context, sub_name)
                assert sub is not None, sub_name
                walk(sub, f"{name} {sub_name}".strip())
        elif any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params):
            found.add(name)

    walk(main, "")
    return found


def test_every_json_command_has_a_schema() -> None:
    assert _json_commands() == set(COMMAND_SCHEMAS), "map each --json command to its schema in COMMAND_SCHEMAS"
    for name in set(COMMAND_SCHEMAS.values()):
        assert resources.files("kitbuilder.schemas").joinpath(f"{name}.schema.json").is_file(), name


def test_failure_document_is_one_definition_shared_by_every_report() -> None:
    shared = _schema_document("verify-report")["$defs"]["failure"]
    failure = {"ok": False, "error": {"kind": "usage", "exitCode": 2, "message": "x: cannot open kit"}}
    for name in sorted(set(COMMAND_SCHEMAS.values())):
        document = _schema_document(name)
        assert document["$defs"]["failure"] == shared, f"{name}: $defs/failure differs from verify-report's"
        assert {"$ref": "#/$defs/failure"} in document["oneOf"], name
        assert schemas.first_error(name, failure) is None, name


@pytest.fixture
def release_pair(kit_env: KitEnv) -> tuple[Path, Path, Path]:
    """(base kit, delta kit, full new kit): sequence 1, then 2 with a changed, an added and a removed file."""
    base = kit_env.kit("base.kit.tar.zst")
    code, document = _json("build", kit_env.spec, "--key", kit_env.ed_key, "--out", base, env=EPOCH)
    assert code == 0, document
    assert_matches("build-report", document)
    assert document["sha256"] and "delta" not in document
    src = kit_env.root / "src"
    (src / "docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, apply, check the report.\n")
    (src / "docs/NEW.md").write_text("new file\n")
    (src / "migrations/21-101/revert.sql").unlink()
    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    delta, full = kit_env.kit("delta.kit.tar.zst"), kit_env.kit("full.kit.tar.zst")
    code, document = _json(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", delta, "--delta-from", base, "--full-out", full
    )
    assert code == 0, document
    assert_matches("build-report", document)
    assert document["delta"] is True and document["fullOut"] == str(full)
    return base, delta, full


def test_build_with_optional_metadata_matches_schema(kit_env: KitEnv) -> None:
    out = kit_env.kit()
    code, document = _json(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--key", kit_env.ec_key, "--out", out, "--sigstore-bundle"
    )
    assert code == 0, document
    assert_matches("build-report", document)
    assert "SHA256SUMS.sigstore.json" in document["metadata"] and len(document["signers"]) == 2
    code, document = _json("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, "--no-provenance")
    assert code == 0 and document["provenance"] is None
    assert_matches("build-report", document)


def test_diff_reports_match_schema(kit_env: KitEnv, release_pair: tuple[Path, Path, Path]) -> None:
    base, _, full = release_pair
    code, verified = run_json("diff", base, full, "--key", kit_env.ed_pub)
    assert code == 0
    assert_matches("diff-report", verified)
    assert verified["signers"]["verified"] and verified["kit"]["sequence"] == {"old": 1, "new": 2}
    code, claimed = run_json("diff", base, full)
    assert code == 0 and not claimed["signers"]["verified"]
    assert_matches("diff-report", claimed)


def test_patch_reports_for_a_kit_file_and_a_directory_match_schema(
    kit_env: KitEnv, release_pair: tuple[Path, Path, Path]
) -> None:
    base, delta, _ = release_pair
    code, document = run_json("patch", base, delta, "--key", kit_env.ed_pub, "--out", kit_env.kit("new.kit.tar.zst"))
    assert code == 0, document
    assert_matches("patch-report", document)
    assert document["directory"] is False
    installed = kit_env.root / "installed"
    installed.mkdir()
    subprocess.run(f"zstd -dc '{base}' | tar -x -C '{installed}'", shell=True, check=True)
    code, document = run_json("patch", installed, delta, "--key", kit_env.ed_pub, "--in-place", "--no-state")
    assert code == 0, document
    assert_matches("patch-report", document)
    assert document["directory"] is True and document["kit"]["sequence"] == 2


def test_sbom_summary_matches_schema(kit_env: KitEnv, built_kit: Path) -> None:
    code, document = run_json("sbom", built_kit, "--key", kit_env.ed_pub, "-o", kit_env.root / "kit.cdx.json")
    assert code == 0, document
    assert_matches("sbom-report", document)
    assert document["verified"] is True
    code, document = run_json("sbom", built_kit, "-o", kit_env.root / "unverified.cdx.json")
    assert code == 0 and document["verified"] is False
    assert_matches("sbom-report", document)


def test_keygen_and_trust_reports_match_schema(kit_env: KitEnv) -> None:
    code, document = run_json("keygen", "--out", kit_env.root / "fresh", "--type", "ecdsa-p256")
    assert code == 0, document
    assert_matches("keygen-report", document)
    root = kit_env.root / "trust.json"
    code, document = run_json("trust", "init", "--key", kit_env.ed_pub, "--expires", "2099-01-01", "--out", root)
    assert code == 0, document
    assert_matches("trust-report", document)
    next_key, next_pub = write_pair(ed25519_key("next"), kit_env.root / "next")
    successor = kit_env.root / "trust-v2.json"
    code, document = run_json(
        "trust",
        "rotate",
        "--trust-root",
        root,
        "--key",
        next_pub,
        "--expires",
        "2099-01-01",
        "--sign-key",
        kit_env.ed_key,
        "--sign-key",
        next_key,
        "--out",
        successor,
    )
    assert code == 0, document
    assert_matches("trust-report", document)
    code, document = run_json("trust", "update", "--trust-root", root, successor)
    assert code == 0, document
    assert_matches("trust-report", document)
    assert document["version"] == 2


def _apply_kit(kit_env: KitEnv, name: str = "apply", *, broken_verify: bool = False) -> Path:
    root = kit_env.root / name
    root.mkdir()
    spec = write_apply_kit_source(root)
    if broken_verify:
        (root / "src/21-102/verify.sql").write_text("SELECT COUNT(*) = 42 FROM advisory_supersedes;\n")
    out = kit_env.kit(f"{name}.kit.tar.zst")
    result = run_kit("build", spec, "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_apply_status_rollback_and_repair_reports_match_schemas(kit_env: KitEnv, db_url: str) -> None:
    kit = _apply_kit(kit_env)
    trust = ("--key", kit_env.ed_pub)
    code, dry, _ = apply_json(kit_env, kit, db_url, "--dry-run")
    assert code == 0 and dry["status"] == "dry-run"
    assert_matches("apply-report", dry)
    connect(db_url).close()  # status and rollback need an existing database (only apply creates a SQLite file)
    code, empty = run_json("status", "--db", db_url)
    assert code == 0 and empty["migrations"] == []
    assert_matches("status-report", empty)
    code, nothing = run_json("rollback", kit, *trust, "--db", db_url, "--to-phase", "none")
    assert code == 0 and nothing["reverted"] == []
    assert_matches("rollback-report", nothing)

    code, applied, _ = apply_json(kit_env, kit, db_url)
    assert code == 0 and applied["status"] == "succeeded", applied
    assert_matches("apply-report", applied)
    assert {s["status"] for s in applied["steps"]} == {"succeeded", "finished"}
    # An interrupted migration that its verify script finds complete is resolved on the next run.
    database = connect(db_url)
    try:
        with database.transaction():
            database.execute("UPDATE kit_migrations SET status = 'running' WHERE id = '21-101-shards'")
    finally:
        database.close()
    code, rerun, _ = apply_json(kit_env, kit, db_url)
    assert code == 0, rerun
    assert_matches("apply-report", rerun)
    assert rerun["steps"][0].get("resolvedBy") == "verify"
    assert {s["status"] for s in rerun["steps"][1:]} == {"skipped"}
    code, status = run_json("status", "--db", db_url)
    assert code == 0 and status["runs"][0]["status"] == "succeeded"
    assert_matches("status-report", status)

    code, would = run_json("rollback", kit, *trust, "--db", db_url, "--to-phase", "21-101", "--dry-run")
    assert code == 0 and len(would["wouldRevert"]) == 4
    assert_matches("rollback-report", would)
    code, reverted = run_json("rollback", kit, *trust, "--db", db_url, "--to-phase", "21-101")
    assert code == 0 and [r["status"] for r in reverted["reverted"]] == ["reverted"] * 4
    assert_matches("rollback-report", reverted)
    code, repaired = run_json(
        "repair", kit, *trust, "--db", db_url, "--accept-checksum", "21-101-shards", "--reason", "contract test"
    )
    assert code == 0, repaired
    assert_matches("repair-report", repaired)


def test_failed_apply_carries_its_partial_report(kit_env: KitEnv, db_url: str) -> None:
    kit = _apply_kit(kit_env, "broken", broken_verify=True)
    code, document, _ = apply_json(kit_env, kit, db_url)
    assert code == 8
    assert_matches("apply-report", document)
    assert (document["ok"], document["status"], document["error"]["kind"]) == (False, "failed", "database")
    assert [s["id"] for s in document["steps"]] == ["21-101-shards"]  # the step that failed is not listed
    assert Path(document["evidence"]["directory"], "report.json").is_file()


def _failing_invocations(kit_env: KitEnv, kit: Path) -> dict[str, tuple[Any, ...]]:
    """One real failing command line per --json command (the image ones are in tests/images)."""
    missing = kit_env.root / "missing.kit.tar.zst"
    stranger = ("--key", kit_env.other_pub)
    return {
        "apply": ("apply", kit, *stranger, "--db", kit_env.root / "site.db"),
        "build": ("build", kit_env.root / "missing.yaml", "--key", kit_env.ed_key, "--out", missing),
        "diff": ("diff", kit, missing),
        "keygen": ("keygen", "--out", kit_env.root / "release"),  # release.key exists
        "patch": ("patch", kit, missing, "--key", kit_env.ed_pub),  # neither --out nor --in-place
        "repair": ("repair", kit, *stranger, "--db", kit_env.root / "site.db", "--resolve", "x", "--reason", "r"),
        "rollback": ("rollback", kit, *stranger, "--db", kit_env.root / "site.db", "--to-phase", "none"),
        "sbom": ("sbom", missing, "-o", kit_env.root / "out.cdx.json"),
        "status": ("status", "--db", "mysql://nowhere/db"),
        "trust init": ("trust", "init", "--key", kit_env.ed_pub, "--expires", "soon", "--out", kit_env.root / "t"),
        "trust rotate": (
            "trust",
            "rotate",
            "--trust-root",
            kit_env.root / "no-root.json",
            "--key",
            kit_env.ed_pub,
            "--expires",
            "2099-01-01",
            "--sign-key",
            kit_env.ed_key,
            "--out",
            kit_env.root / "t2",
        ),
        "trust update": ("trust", "update", "--trust-root", kit_env.root / "no-root.json", kit_env.root / "t3"),
        "verify": ("verify", kit, *stranger),
    }


def test_failures_of_every_command_match_their_schemas(kit_env: KitEnv, built_kit: Path) -> None:
    invocations = _failing_invocations(kit_env, built_kit)
    image_commands = {"images export", "images push"}
    assert set(invocations) == set(COMMAND_SCHEMAS) - image_commands - {"inspect"}
    for command, args in invocations.items():
        code, document = _json(*args)
        assert code != 0 and document["ok"] is False, (command, document)
        assert document["error"]["exitCode"] == code, command
        assert_matches(COMMAND_SCHEMAS[command], document)


def test_inspect_failure_matches_schema(kit_env: KitEnv) -> None:
    code, document = run_json("inspect", kit_env.root / "missing.kit.tar.zst")
    assert code == 2
    assert_matches("inspect-report", document)
