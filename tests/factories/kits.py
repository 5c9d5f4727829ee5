"""Small kit specs and source trees for tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
    from kitbuilder.archive.index import IndexEntry

    caps = reader.Caps()
    with kit.open("rb") as stream:
        index = reader.read_index(stream, caps).index
        # Format 2: a member is located by the frames that hold it (its span), format 1 by its index entry.
        if index.format_version == 2:
            return {span.path: reader.read_member(stream, span, caps) for span in index.spans()}
        return {e.path: reader.read_member(stream, e, caps) for e in index.members if isinstance(e, IndexEntry)}


def rewrite_kit(kit: Path, out: Path, replace: Mapping[str, bytes], *, level: int = 3, mtime: int = 0) -> Path:
    """The same members in the same order with some replaced, and new ones appended: what anyone can do to a kit
    file without a key. With the kit's own level and mtime, untouched members keep their exact frames."""
    from kitbuilder.archive.writer import KitWriter

    members = kit_members(kit)
    members |= {name: data for name, data in replace.items() if name not in members}
    with out.open("wb") as sink:
        writer = KitWriter(sink, level=level, threads=0, mtime=mtime)
        for name, data in members.items():
            writer.add_bytes(name, replace.get(name, data))
        writer.finish()
    return out
