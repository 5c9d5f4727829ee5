"""Plan building from a verified manifest and its staged files, byte for byte (apply/plan.build_plan).

The order of steps and each step's checksum (kit-sha256-v1, recorded in kit_migrations, so it must never
change for the same component) are computed here independently from the bytes and compared.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kitbuilder.apply.plan import build_plan
from kitbuilder.core.manifest import Component, FileEntry, KitInfo, Manifest
from kitbuilder.core.manifest_parts import BuildInfo, ComponentOptions, Compression
from kitbuilder.errors import FormatError

JOB = b"table: items\nkey: id\npredicate: done IS NULL\nset:\n  done: \"'v2'\"\nbatch_size: 10\n"
SOURCES: dict[str, bytes] = {
    "db/m10/up.sql": b"CREATE TABLE items (id INTEGER PRIMARY KEY, done TEXT);\n",
    "db/m10/verify.sql": b"SELECT COUNT(*) >= 0 FROM items;\n",
    "db/m9/up.sql": b"CREATE TABLE other (id INTEGER);\n",
    "db/late/up.sql": b"CREATE INDEX items_done ON items (done);\n",
    "seeds/s1/rows.ndjson": b'{"id": 1}\n',
    "backfills/b1/job.yaml": JOB,
}
# Component id -> (role, phase, its files, options as signed).
COMPONENTS = {
    "m10": ("migration", "21-10", ("db/m10/up.sql", "db/m10/verify.sql"), ComponentOptions(up="up.sql")),
    "b1": ("backfill", "21-9", ("backfills/b1/job.yaml",), ComponentOptions()),
    "late": ("migration", None, ("db/late/up.sql",), ComponentOptions(up="up.sql", transactional=True)),
    "s1": ("seed", "21-9", ("seeds/s1/rows.ndjson",), ComponentOptions(table="lookup", key=("id",))),
    "m9": ("migration", "21-9", ("db/m9/up.sql",), ComponentOptions(up="up.sql")),
}


def _manifest() -> Manifest:
    components = tuple(
        Component(id=cid, role=role, phase=phase, options=options)
        for cid, (role, phase, _, options) in COMPONENTS.items()
    )
    files = tuple(
        FileEntry(path, len(SOURCES[path]), hashlib.sha256(SOURCES[path]).hexdigest(), role, cid)
        for cid, (role, _, paths, _) in COMPONENTS.items()
        for path in paths
    )
    kit = KitInfo("demo", "1", 1, "2099-01-01T00:00:00Z", "demo", "stable")
    return Manifest(kit=kit, build=BuildInfo("tests", Compression(level=3)), components=components, files=files)


def _staged(tmp_path: Path) -> Path:
    for path, data in SOURCES.items():
        target = tmp_path.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return tmp_path


def _expected_checksum(cid: str) -> str:
    """kit-sha256-v1 as docs/apply.md (kit_migrations) defines it: each file (name inside the component: digest),
    sorted, then each signed option (key=repr of its JSON value), sorted, joined by newlines."""
    _, _, paths, options = COMPONENTS[cid]
    prefix = {"m10": "db/m10/", "m9": "db/m9/", "late": "db/late/", "s1": "seeds/s1/", "b1": "backfills/b1/"}[cid]
    lines = sorted(f"{path[len(prefix) :]}:{hashlib.sha256(SOURCES[path]).hexdigest()}" for path in paths)
    signed = options.to_json()
    lines += [f"option:{key}={signed[key]!r}" for key in sorted(signed)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_steps_run_by_phase_as_numbers_then_role_then_manifest_order(tmp_path: Path) -> None:
    plan = build_plan(_manifest(), _staged(tmp_path))
    # 21-9 before 21-10 (digit runs compare as numbers); in 21-9 migrations, then seeds, then backfills;
    # a component without a phase runs after every phase.
    assert [(s.id, s.kind, s.phase) for s in plan.steps] == [
        ("m9", "migration", "21-9"),
        ("s1", "seed", "21-9"),
        ("b1", "backfill", "21-9"),
        ("m10", "migration", "21-10"),
        ("late", "migration", "~"),
    ]


def test_each_step_checksum_is_kit_sha256_v1_of_its_bytes_and_signed_options(tmp_path: Path) -> None:
    plan = build_plan(_manifest(), _staged(tmp_path))
    assert {s.id: s.checksum for s in plan.steps} == {cid: _expected_checksum(cid) for cid in COMPONENTS}


def test_a_staged_file_is_what_the_plan_points_at(tmp_path: Path) -> None:
    plan = build_plan(_manifest(), _staged(tmp_path))
    (m10,) = [s for s in plan.steps if s.id == "m10"]
    assert m10.files["up"].read_bytes() == SOURCES["db/m10/up.sql"]
    assert m10.files["verify"].read_bytes() == SOURCES["db/m10/verify.sql"]
    (b1,) = [s for s in plan.steps if s.id == "b1"]
    assert b1.files["job"].read_bytes() == JOB


def test_a_migration_whose_named_file_is_missing_is_refused(tmp_path: Path) -> None:
    manifest = _manifest()
    broken = Manifest(
        kit=manifest.kit,
        build=manifest.build,
        components=tuple(
            Component(id=c.id, role=c.role, phase=c.phase, options=ComponentOptions(up="missing.sql"))
            if c.id == "m9"
            else c
            for c in manifest.components
        ),
        files=manifest.files,
    )
    with pytest.raises(FormatError, match="m9"):
        build_plan(broken, _staged(tmp_path))
