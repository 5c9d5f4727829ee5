"""Signed apply kits with any manifest, crafted with kitbuilder's own writer and ``seal``.

A hostile (or buggy) signer can put into the signed manifest what ``kit build`` would
refuse: a list where a file name belongs, a count check without a table, an integer seed
key. These kits are validly signed by tests.factories.hostile.RELEASE, so a refusal comes
from the rule under test, never from a broken signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core.manifest import Component, KitInfo
from kitbuilder.ops.build import seal
from tests.factories.hostile import RELEASE
from tests.factories.kits import TEST_BUILD, CraftedManifest, write_payload

GOOD_UP = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, tenant TEXT, done TEXT);\n"
GOOD_VERIFY = "SELECT COUNT(*) >= 0 FROM items;\n"


def craft_apply_kit(
    out: Path,
    components: Sequence[Mapping[str, Any]],
    files: Mapping[str, tuple[str, bytes]],
    *,
    checks: Sequence[Mapping[str, Any]] = (),
    sequence: int = 1,
) -> Path:
    """``components``: dicts with id, role and optional phase/subject/options; ``files``: path → (component, bytes)."""
    roles = {c["id"]: c["role"] for c in components}
    with out.open("wb") as sink:
        writer = KitWriter2(sink, level=3)
        entries, frames = write_payload(
            writer, ((path, data, roles[component], component) for path, (component, data) in files.items())
        )
        # Components and checks go into the signed JSON as given: many are hostile on purpose.
        manifest = CraftedManifest(
            kit=KitInfo("crafted-apply", "1.0.0", sequence, "2099-01-01T00:00:00Z", "demo", "stable"),
            build=TEST_BUILD,
            components=tuple(Component(id=c["id"], role=c["role"]) for c in components),
            files=tuple(entries),
            frames=frames,
            format_version=2,
            replace={
                "components": [dict(c) for c in components],
                **({"checks": [dict(c) for c in checks]} if checks else {}),
            },
        )
        seal(writer, manifest, [RELEASE])
        writer.finish()
    return out


def good_migration(
    component_id: str = "m1", phase: str = "1", **options: Any
) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """A migration component and its files (up.sql, verify.sql)."""
    return (
        {"id": component_id, "role": "migration", "phase": phase, "options": options},
        {
            f"migrations/{component_id}/up.sql": (component_id, GOOD_UP.encode()),
            f"migrations/{component_id}/verify.sql": (component_id, GOOD_VERIFY.encode()),
        },
    )
