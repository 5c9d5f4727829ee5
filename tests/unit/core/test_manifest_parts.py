"""The typed parts of manifest.json (core/manifest_parts.py, kitchecks.py): one round trip per model against its schema.

Each part is put in a manifest the schema (format 1 and 2 where the part differs) accepts, read with
``Manifest.from_json`` and written back: what comes out is what went in, field for field, so a
re-signed manifest (a delta's) says what the original said and nothing the schema accepts is dropped.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kitbuilder.core import schemas
from kitbuilder.core.kitchecks import CountCheck, Expect, SqlCheck, parse_check
from kitbuilder.core.manifest import MANIFEST_API, MANIFEST_API_V2, Manifest
from kitbuilder.core.manifest_parts import (
    BuildInfo,
    ComponentOptions,
    Compression,
    DeltaInfo,
    MigrationOptions,
    SeedOptions,
)
from kitbuilder.errors import FormatError

SHA = "ab" * 32


def payload(files: int = 0, size: int = 0, role: str = "doc") -> dict[str, Any]:
    """A format-2 component's payload totals: ``files`` files of ``role`` holding ``size`` bytes."""
    return {"files": files, "bytes": size, "byRole": {role: {"files": files, "bytes": size}} if files else {}}


def manifest_document(*, version: int = 2, **parts: Any) -> dict[str, Any]:
    """A small manifest the schema of format ``version`` accepts, with ``parts`` (build, delta, ...) replaced."""
    document: dict[str, Any] = {
        "apiVersion": MANIFEST_API_V2 if version == 2 else MANIFEST_API,
        "kind": "KitManifest",
        "kit": {
            "name": "demo",
            "version": "1.0.0",
            "sequence": 1,
            "expires": "2099-01-01T00:00:00Z",
            "product": "demo",
            "channel": "stable",
            "description": "",
        },
        "build": {"tool": "kitbuilder test", "compression": {"algorithm": "zstd", "level": 3}, "checksumKeyId": SHA},
        # Format 2: each component states its payload totals, which add up to fileList's count and payloadBytes.
        "components": [{"id": "docs", "role": "doc", **payload(1, 1)}],
        # Format 2: the files are in the signed file list, which the manifest names by digest.
        "fileList": {"count": 1, "path": "manifest.files.jsonl", "payloadBytes": 1, "sha256": SHA, "size": 101},
        "frames": [{"offset": 0, "length": 10, "size": 1024, "sha256": SHA}],
    }
    if version == 1:
        document["build"]["compression"]["multithreaded"] = False
        document["build"]["mtime"] = 1700000000
        document["files"] = [
            {
                "path": "docs/a.md",
                "size": 1,
                "sha256": SHA,
                "role": "doc",
                "component": "docs",
                "frame": {"offset": 0, "length": 10, "sha256": SHA},
            }
        ]
        del document["frames"]
        del document["fileList"]
        document["components"] = [{"id": "docs", "role": "doc"}]
    document.update(parts)
    return document


def round_trip(document: dict[str, Any]) -> dict[str, Any]:
    """The document through the schema, the models and back."""
    schemas.validate("manifest-v2" if document["apiVersion"] == MANIFEST_API_V2 else "manifest", document, what="t")
    return Manifest.from_json(copy.deepcopy(document)).to_json()


@pytest.mark.parametrize("version", [1, 2])
def test_build_round_trips(version: int) -> None:
    document = manifest_document(version=version)
    assert round_trip(document)["build"] == document["build"]
    build = Manifest.from_json(document).build
    assert build.compression.level == 3 and build.checksum_key_id == SHA
    assert build.mtime == (1700000000 if version == 1 else None)
    assert BuildInfo.from_json(build.to_json()) == build
    # An old kit without checksumKeyId stays without one.
    old = manifest_document(version=version, build={k: v for k, v in document["build"].items() if k != "checksumKeyId"})
    assert round_trip(old)["build"] == old["build"]


_V1_COMPRESSION = {"algorithm": "zstd", "level": 3, "multithreaded": False}


@pytest.mark.parametrize(
    ("build", "field"),
    [
        ({"tool": "t", "compression": _V1_COMPRESSION, "extra": 1}, "extra"),
        ({"tool": "t", "compression": _V1_COMPRESSION, "checksumKeyId": 7}, "checksumKeyId"),
    ],
)
def test_a_build_field_kit_would_not_honour_is_refused(build: dict[str, Any], field: str) -> None:
    # Format 1's schema lets these through; the model neither drops nor misreads them (a non-string
    # checksumKeyId used to be taken as absent).
    document = manifest_document(version=1, build=build)
    schemas.validate("manifest", document, what="t")
    with pytest.raises(FormatError, match=rf"^manifest.json: build: .*{field}"):
        Manifest.from_json(document)
    assert Compression.from_json(_V1_COMPRESSION).multithreaded is False


def test_delta_round_trips() -> None:
    delta = {
        "baseManifestSha256": SHA,
        "baseSequence": 1,
        "baseVersion": "1.0.0",
        "removed": ["docs/old.md"],
        "targetManifestSha256": "cd" * 32,
    }
    assert round_trip(manifest_document(delta=delta))["delta"] == delta
    minimal = {"baseManifestSha256": SHA, "baseSequence": 1, "baseVersion": "1.0.0"}
    assert round_trip(manifest_document(delta=minimal))["delta"] == minimal
    parsed = DeltaInfo.from_json(delta)
    assert parsed.removed == ("docs/old.md",) and parsed.target_manifest_sha256 == "cd" * 32
    assert "delta" not in round_trip(manifest_document())


CHECKS: list[dict[str, Any]] = [
    {"id": "rows", "kind": "count", "table": "t", "expect": {"delta": -3}, "where": "x > 1", "phase": "1"},
    {"id": "stable", "kind": "count", "table": "public.t", "expect": "stable", "on_fail": "warn"},
    {"id": "uniq", "kind": "unique", "table": "t", "columns": ["a", "b"], "on_fail": "halt"},
    {"id": "fk", "kind": "foreign-key", "table": "c", "column": "p", "references": {"table": "p", "column": "id"}},
    {"id": "sqlite", "kind": "sqlite-foreign-key-check"},
    {"id": "sql", "kind": "sql", "query": "SELECT 1", "expect": "truthy"},
    {"id": "sql2", "kind": "sql", "query": "SELECT 2"},
]


def test_checks_round_trip_as_the_spec_wrote_them() -> None:
    assert round_trip(manifest_document(checks=CHECKS))["checks"] == CHECKS
    for check in CHECKS:
        assert parse_check(check, "c").to_json() == check
    # Absent optional fields stay absent, and apply still reads their defaults.
    sql = parse_check(CHECKS[-1], "c")
    assert isinstance(sql, SqlCheck) and sql.on_fail is None and sql.action == "halt" and sql.expect is None
    count = parse_check(CHECKS[1], "c")
    assert count == CountCheck(id="stable", table="public.t", expect=Expect("stable"), on_fail="warn")


def test_a_bad_check_in_the_manifest_is_named() -> None:
    bad = manifest_document(checks=[CHECKS[0], {"id": "c", "kind": "count", "table": "t"}])
    with pytest.raises(FormatError, match=r"^manifest checks\[1\] \(c\): expect: required field is missing$"):
        Manifest.from_json(bad)


OPTIONS = [
    (
        "migration",
        {"up": "up.sql", "verify": "verify.sql", "revert": "r.sql", "transactional": False, "idempotent": True},
    ),
    ("migration", {"verify": "verify.sql"}),
    ("seed", {"table": "public.items", "key": ["id", "tenant"]}),
]


@pytest.mark.parametrize(("role", "options"), OPTIONS)
def test_component_options_round_trip(role: str, options: dict[str, Any]) -> None:
    component = {"id": "c1", "role": role, "phase": "21-101", "options": options, **payload()}
    document = manifest_document(components=[{"id": "docs", "role": "doc", **payload(1, 1)}, component])
    assert round_trip(document)["components"][1] == component
    parsed = ComponentOptions.from_json(options, role=role, where="w")
    assert parsed.to_json() == options
    if role == "migration":
        assert parsed.migration() == MigrationOptions.from_json(options, "w")
    else:
        assert parsed.seed() == SeedOptions(table="public.items", key=("id", "tenant"))


def test_migration_defaults_are_read_but_not_written() -> None:
    parsed = ComponentOptions.from_json({"verify": "verify.sql"}, role="migration", where="w")
    assert parsed.migration() == MigrationOptions()  # "verify.sql" means: when present
    assert parsed.to_json() == {"verify": "verify.sql"}  # but the manifest keeps what it signed


@pytest.mark.parametrize(
    ("role", "options", "field"),
    [
        ("doc", {"up": "up.sql"}, "up"),
        ("backfill", {"table": "t"}, "table"),
        ("migration", {"table": "t"}, "table"),
        ("seed", {"table": "t", "key": ["id"], "up": "x.sql"}, "up"),
        ("migration", {"up": ["up.sql"]}, "up"),
    ],
)
def test_options_a_role_would_not_honour_are_refused(role: str, options: dict[str, Any], field: str) -> None:
    component = {"id": "c1", "role": role, "options": options, **payload(1, 1, role)}
    document = manifest_document(components=[component])
    with pytest.raises(FormatError, match=rf"^manifest components\[0\] \({role} c1\): options: .*{field}"):
        Manifest.from_json(document)


def test_the_manifest_imports_first_on_its_own() -> None:
    # core/sbom imports the manifest; the manifest's parts must not import core/sbom back (an import cycle that
    # only shows when the manifest is the first module loaded, as in `kit inspect`).
    import subprocess
    import sys

    for module in ("kitbuilder.core.manifest", "kitbuilder.core.sbom", "kitbuilder.core.manifest_parts"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
