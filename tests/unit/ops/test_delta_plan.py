"""A delta build's plan (``delta_content.plan_files``): one merge of the two signed file lists in path order.

Checked against what the plan must say whatever order the lists are in (archive order: a few sorted runs, here an
SBOM after the inputs and images/ after that): which target files the base lacks by content (anywhere in the base,
not only at the same path), which base file a patch may use (the same path's small file), and the summary's paths.
"""

from __future__ import annotations

import hashlib

from kitbuilder.archive import layout
from kitbuilder.core.filelist import FileEntry, FileTable
from kitbuilder.ops.delta_content import plan_files


def _entry(path: str, content: str, frame: int, *, size: int | None = None) -> FileEntry:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return FileEntry(path, len(content) if size is None else size, digest, "doc", "tree", frame=frame, at=0)


BASE = [
    _entry("docs/a.md", "a1", 0),
    _entry("docs/b.md", "b1", 0),
    _entry("docs/c.md", "c1", 1),
    _entry("docs/gone.md", "gone", 1),
    _entry("docs/old-name.md", "moved", 1),
    _entry("images/big.bin", "big1", 2, size=layout.LARGE),
    _entry("sbom/kit.cdx.json", "sbom1", 3),
]


def test_the_plan_names_what_the_base_lacks_by_content() -> None:
    target = [
        _entry("docs/a.md", "a1", 0),  # the same content at the same path, in a frame the base lacks
        _entry("docs/b.md", "b2", 0),  # changed: a patch against the base's docs/b.md
        _entry("docs/c.md", "c1", 1),  # in a frame the base has: never looked at
        _entry("docs/new-name.md", "moved", 1),  # a content the base has at another path: carried by neither
        _entry("docs/new.md", "new", 1),  # added
        _entry("images/big.bin", "big2", 2, size=layout.LARGE),  # changed, large: no patch base
        _entry("sbom/kit.cdx.json", "sbom2", 3),  # changed, after the other runs (archive order)
    ]
    # Frame 1 of the target is the base's, but for the two files the merge sees there; the others are new.
    plan = plan_files(FileTable.of(BASE), FileTable.of(target), fresh={0, 2, 3})
    assert plan.removed == ("docs/gone.md", "docs/old-name.md")
    assert plan.changed == ("docs/b.md", "images/big.bin", "sbom/kit.cdx.json")
    # docs/new.md lies in frame 1, which is not fresh: content there is the base's, so it is not looked at.
    assert plan.added == ()
    assert set(plan.lacking) == {1, 5, 6}
    assert plan.lacking[1] == BASE[1]
    assert plan.lacking[5] is None  # the base's file there is large: no patch against it
    assert plan.lacking[6] == BASE[6]


def test_a_content_the_base_has_elsewhere_is_not_lacking() -> None:
    target = [
        _entry("docs/new-name.md", "moved", 0),
        _entry("docs/zz-new.md", "new", 0),
        _entry("docs/a.md", "b1", 0),  # docs/b.md's content, now at docs/a.md; out of path order (a second run)
    ]
    plan = plan_files(BASE, target, fresh={0})
    assert plan.lacking == {1: None}
    assert plan.added == ("docs/zz-new.md",)
    assert plan.changed == ()
    assert plan.removed == (
        "docs/b.md",
        "docs/c.md",
        "docs/gone.md",
        "docs/old-name.md",
        "images/big.bin",
        "sbom/kit.cdx.json",
    )


def test_nothing_differs_when_the_lists_are_the_same() -> None:
    plan = plan_files(BASE, list(BASE), fresh={0, 1, 2, 3})
    assert (plan.lacking, plan.added, plan.changed, plan.removed) == ({}, (), (), ())
