"""Small kit specs and source trees for tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core.manifest import FileEntry, FrameEntry, Manifest, is_optional_metadata
from kitbuilder.core.manifest_parts import BuildInfo, Compression
from kitbuilder.ops.kitfile import located_index

# What crafted kits record as build (format 2: no mtime, no thread flag).
TEST_BUILD = BuildInfo(tool="tests", compression=Compression(level=3))


@dataclass(frozen=True)
class CraftedManifest(Manifest):
    """A manifest whose JSON has top-level parts replaced verbatim by ``replace``: hostile values (an option
    of the wrong type, a check of no kind) that the typed models refuse to hold, signed as they are."""

    replace: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        replaced = dict(self.replace)
        if self.format_version == 2 and "components" in replaced:
            # Format 2: each replaced component keeps the payload totals seal counted for its id (unless it states
            # its own), so the kit is refused for the hostile value it carries, not for missing totals.
            sealed = {c["id"]: c for c in document["components"]}
            totals = ("files", "bytes", "byRole")
            replaced["components"] = [
                {**{k: sealed[c["id"]][k] for k in totals if c.get("id") in sealed and "files" not in c}, **c}
                for c in replaced["components"]
            ]
        return {**document, **replaced}


SPEC_TEMPLATE = """\
apiVersion: kitbuilder/v1
name: {name}
version: "{version}"
sequence: {sequence}
expires: "{expires}"
product: {product}
channel: stable
description: test kit
migrations:
  - id: 21-101-shard-index
    phase: "21-101"
    source: src/migrations/21-101
seeds:
  - id: object-store
    source: src/seeds
    table: seed_rows
    key: [id]
docs:
  - id: operator
    source: src/docs
"""


def make_source_tree(root: Path, *, big_bytes: int = 200_000) -> None:
    """A realistic small tree: SQL, NDJSON seed, docs and one larger binary-ish file."""
    (root / "src/migrations/21-101").mkdir(parents=True, exist_ok=True)
    (root / "src/seeds").mkdir(parents=True, exist_ok=True)
    (root / "src/docs").mkdir(parents=True, exist_ok=True)
    (root / "src/migrations/21-101/up.sql").write_text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY);\n")
    (root / "src/migrations/21-101/verify.sql").write_text("SELECT COUNT(*) >= 0 FROM t;\n")
    (root / "src/migrations/21-101/revert.sql").write_text("DROP TABLE IF EXISTS t;\n")
    (root / "src/seeds/rows.ndjson").write_text("".join(f'{{"id": {i}, "v": "row-{i}"}}\n' for i in range(200)))
    (root / "src/docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, then apply.\n")
    # Deterministic, poorly compressible content so frames span several zstd blocks.
    block = bytearray()
    state = 12345
    while len(block) < big_bytes:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        block += state.to_bytes(4, "little")
    (root / "src/docs/blob.bin").write_bytes(bytes(block[:big_bytes]))


def write_spec(
    root: Path,
    *,
    name: str = "demo-kit",
    version: str = "1.0.0",
    sequence: int = 1,
    expires: str = "2099-01-01T00:00:00Z",
    product: str = "demo",
) -> Path:
    make_source_tree(root)
    spec = root / "kit.yaml"
    spec.write_text(
        SPEC_TEMPLATE.format(name=name, version=version, sequence=sequence, expires=expires, product=product)
    )
    return spec


def kit_members(kit: Path) -> dict[str, bytes]:
    """Every member's content, read through the index (each checked against its index entry)."""
    from kitbuilder.archive import reader

    caps = reader.Caps()
    with kit.open("rb") as stream:
        index = located_index(stream, caps)
        return {e.path: reader.read_member(stream, e, caps) for e in index.located()}


def member_end(kit: Path, member: str) -> int:
    """The file offset where the last frame holding ``member`` ends (its data frame's end, in format 1)."""
    from kitbuilder.archive import reader
    from kitbuilder.archive.index import IndexEntry

    with kit.open("rb") as stream:
        entry = located_index(stream, reader.Caps()).locate(member)
    if isinstance(entry, IndexEntry):
        return entry.offset + entry.length
    return entry.frames[-1].offset + entry.frames[-1].length


def write_payload(
    writer: KitWriter2, files: Iterable[tuple[str, bytes, str, str]]
) -> tuple[tuple[FileEntry, ...], tuple[FrameEntry, ...]]:
    """Payload members (path, content, role, component) through the format-2 writer, in the order given; the
    manifest's file entries and payload frames for them. The caller then seals (``ops.build.seal``)."""
    roles = []
    for path, data, role, component in files:
        writer.add_bytes(path, data)
        roles.append((role, component))
    payload = writer.finish_payload()
    entries = tuple(
        FileEntry(m.path, m.size, m.sha256, role, component, frame=m.frame, at=m.at)
        for m, (role, component) in zip(payload.members, roles, strict=True)
    )
    return entries, payload.frames


def rewrite_kit(kit: Path, out: Path, replace: Mapping[str, bytes], *, level: int = 3) -> Path:
    """The same members in the same order with some replaced, and new ones appended: what anyone can do to a kit
    file without a key. Payload members are regrouped by the format-2 rules; each metadata member is one frame."""
    from kitbuilder.core.manifest import METADATA_FILES

    members = kit_members(kit)
    members |= {name: data for name, data in replace.items() if name not in members}
    metadata = [name for name in members if name in METADATA_FILES or is_optional_metadata(name)]
    with out.open("wb") as sink:
        writer = KitWriter2(sink, level=level)
        for name, data in members.items():
            if name not in metadata:
                writer.add_bytes(name, replace.get(name, data))
        writer.finish_payload()
        for name in metadata:
            writer.add_metadata(name, replace.get(name, members[name]))
        writer.finish()
    return out
