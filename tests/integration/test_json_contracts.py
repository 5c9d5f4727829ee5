"""--json outputs and written files match the schemas in schemas/ (the contract)."""

from __future__ import annotations

import json
from pathlib import Path

import zstandard

from kitbuilder.core import schemas
from tests.factories.cli import KitEnv, run_json, run_kit


def _valid(name: str, document: object) -> None:
    error = schemas.first_error(name, document)
    assert error is None, f"{schemas.json_path(error)}: {error.message}"


def test_verify_success_report_matches_schema(kit_env: KitEnv, built_kit: Path) -> None:
    code, document = run_json("verify", built_kit, "--key", kit_env.ed_pub)
    assert code == 0
    _valid("verify-report", document)


def test_verify_failure_report_matches_schema(kit_env: KitEnv, built_kit: Path) -> None:
    code, document = run_json("verify", built_kit, "--key", kit_env.other_pub)
    assert code == 3
    _valid("verify-report", document)
    assert document["error"]["exitCode"] == 3


def test_inspect_report_matches_schema(built_kit: Path) -> None:
    _valid("inspect-report", run_json("inspect", built_kit)[1])


def test_trust_root_file_matches_schema(kit_env: KitEnv, tmp_path: Path) -> None:
    out = tmp_path / "trust.json"
    assert run_kit("trust", "init", "--key", kit_env.ed_pub, "--expires", "2099-01-01", "--out", out).exit_code == 0
    _valid("trust-root", json.loads(out.read_text()))


def test_manifest_and_index_match_schemas(built_kit: Path) -> None:
    from kitbuilder.archive.reader import Caps, read_index, read_member

    with built_kit.open("rb") as stream:
        location = read_index(stream, Caps())
        manifest = read_member(stream, location.index.by_path()["manifest.json"], Caps())
    # kit build writes format 2 (docs/format.md §0): the v2 manifest and index schemas.
    _valid("manifest-v2", json.loads(manifest))
    _valid("index-v2", json.loads(location.index.to_bytes()))


def test_every_schema_is_itself_valid() -> None:
    from jsonschema import Draft7Validator

    directory = Path(schemas.__file__).parent.parent / "schemas"
    names = sorted(p.name for p in directory.glob("*.schema.json"))
    assert {
        "kit-spec.schema.json",
        "manifest.schema.json",
        "trust-root.schema.json",
        "verify-report.schema.json",
        "index.schema.json",
        "index-v2.schema.json",
        "manifest-v2.schema.json",
        "inspect-report.schema.json",
    } <= set(names)
    for name in names:
        Draft7Validator.check_schema(json.loads((directory / name).read_text()))


def test_kit_is_one_standard_zstd_stream(built_kit: Path) -> None:
    """Stock decoders read across frames and skip the index/footer frames."""
    with built_kit.open("rb") as handle:
        data = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True).read()
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))
