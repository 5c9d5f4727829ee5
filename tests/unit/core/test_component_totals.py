"""Format 2's signed component totals (core/manifest_parts.py ``ComponentPayload``, ``count_payloads``,
``check_component_payloads``; ``Manifest.sealed_with`` and the checks ``Manifest.from_json`` makes).

The totals are what ``kit inspect`` shows without reading the file list, so each rule that ties them to the
list (exit 4) or to the manifest's own fileList record (exit 5) is checked here on values, and end to end in
tests/integration/test_hostile_format2_filelist.py and the test vectors.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kitbuilder.core.filelist import FileEntry, FileListRef
from kitbuilder.core.manifest import Component, KitInfo, Manifest
from kitbuilder.core.manifest_parts import (
    BuildInfo,
    ComponentPayload,
    Compression,
    PayloadTotals,
    check_component_payloads,
    count_payloads,
)
from kitbuilder.errors import FormatError, IntegrityError
from tests.unit.core.test_manifest_parts import SHA, manifest_document, payload


def entry(path: str, size: int, role: str, component: str) -> FileEntry:
    return FileEntry(path=path, size=size, sha256=SHA, role=role, component=component, frame=0)


# A delta's shape: one component holding files of two roles, runs of each, and a component of no file.
FILES = (
    entry("a/1", 10, "doc", "a"),
    entry("a/2", 5, "doc", "a"),
    entry("delta/frames/x", 100, "delta-frame", "kit-delta"),
    entry("delta/target/m", 7, "delta-target", "kit-delta"),
    entry("delta/frames/y", 1, "delta-frame", "kit-delta"),
)


def test_count_payloads_totals_each_component_by_role() -> None:
    counted = count_payloads(FILES)
    assert counted["a"] == ComponentPayload(2, 15, (("doc", PayloadTotals(2, 15)),))
    assert counted["kit-delta"] == ComponentPayload(
        3, 108, (("delta-frame", PayloadTotals(2, 101)), ("delta-target", PayloadTotals(1, 7)))
    )
    assert set(counted) == {"a", "kit-delta"}


def _manifest(*components: Component) -> Manifest:
    return Manifest(
        kit=KitInfo("k", "1", 1, "2099-01-01T00:00:00Z", "p", "c"),
        build=BuildInfo(tool="t", compression=Compression(level=3)),
        components=components,
        files=FILES,
        format_version=2,
    )


def test_sealed_with_counts_every_component_and_round_trips() -> None:
    ref = FileListRef(count=5, size=1, sha256=SHA, payload_bytes=123)
    sealed = _manifest(Component("a", "doc"), Component("kit-delta", "delta"), Component("empty", "doc")).sealed_with(
        ref
    )
    document = sealed.to_json()
    assert document["components"][2] == {"id": "empty", "role": "doc", "files": 0, "bytes": 0, "byRole": {}}
    assert document["components"][1]["byRole"] == {
        "delta-frame": {"files": 2, "bytes": 101},
        "delta-target": {"files": 1, "bytes": 7},
    }
    document["frames"] = [{"offset": 0, "length": 10, "size": 1024, "sha256": SHA}]
    parsed = Manifest.from_json(copy.deepcopy(document))
    assert parsed.component_payloads() == count_payloads(FILES) | {"empty": ComponentPayload(0, 0, ())}
    assert parsed.to_json() == document


def test_a_format2_manifest_is_not_written_without_totals() -> None:
    unsealed = _manifest(Component("a", "doc"))
    with pytest.raises(ValueError, match="fileList and totals"):
        unsealed.to_json()


def test_totals_are_no_part_of_what_a_component_is() -> None:
    """kit diff compares components by what they are: a component whose files changed is the same component."""
    assert Component("a", "doc", payload=ComponentPayload(1, 1, ())) == Component("a", "doc")


def _stated(payloads: dict[str, ComponentPayload]) -> list[tuple[str, ComponentPayload | None]]:
    return list(payloads.items())


def test_totals_that_match_the_list_pass() -> None:
    check_component_payloads(_stated(count_payloads(FILES)), FILES, what="manifest.files.jsonl")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"a": ComponentPayload(3, 15, (("doc", PayloadTotals(3, 15)),))},
            r"^manifest.json: component 'a' states 3 files, manifest.files.jsonl holds 2; the kit was altered$",
        ),
        (
            {"a": ComponentPayload(2, 16, (("doc", PayloadTotals(2, 16)),))},
            r"^manifest.json: component 'a' states 16 bytes, manifest.files.jsonl holds 15; the kit was altered$",
        ),
        (
            {"a": ComponentPayload(2, 15, (("seed", PayloadTotals(2, 15)),))},
            r"^manifest.json: component 'a' states files/bytes by role seed 2/15, manifest.files.jsonl holds doc 2/15",
        ),
        (
            {"b": ComponentPayload(1, 1, (("doc", PayloadTotals(1, 1)),))},
            r"^manifest.json: component 'b' states 1 files, manifest.files.jsonl holds 0",
        ),
    ],
)
def test_totals_that_differ_from_the_list_name_the_component_and_both_numbers(
    change: dict[str, ComponentPayload], message: str
) -> None:
    stated = count_payloads(FILES) | change
    with pytest.raises(IntegrityError, match=message):
        check_component_payloads(_stated(stated), FILES, what="manifest.files.jsonl")


def test_a_file_of_an_unlisted_component_is_refused() -> None:
    stated = {"a": count_payloads(FILES)["a"]}
    with pytest.raises(IntegrityError, match=r"files of component 'kit-delta', which manifest.json does not list"):
        check_component_payloads(_stated(stated), FILES, what="manifest.files.jsonl")


def test_format1_components_state_no_totals() -> None:
    check_component_payloads([("a", None), ("kit-delta", None)], FILES, what="f")


def _document(**component: Any) -> dict[str, Any]:
    return manifest_document(components=[{"id": "docs", "role": "doc", **payload(1, 1), **component}])


@pytest.mark.parametrize(
    ("component", "message"),
    [
        ({"files": 2}, r"byRole adds up to 1 files and 1 bytes, but the component states 2 files and 1 bytes$"),
        ({"byRole": {"doc": {"files": 1, "bytes": 0}}}, r"byRole adds up to 1 files and 0 bytes"),
    ],
)
def test_by_role_must_add_up_to_the_component(component: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Manifest.from_json(_document(**component))


def test_components_must_add_up_to_the_file_list_record() -> None:
    document = _document(**payload(2, 1))
    with pytest.raises(FormatError, match=r"the components hold 2 files and 1 bytes, but fileList.count is 1"):
        Manifest.from_json(document)


def test_components_without_totals_are_a_development_build() -> None:
    document = manifest_document(components=[{"id": "docs", "role": "doc"}])
    with pytest.raises(FormatError, match=r"^manifest.json: its components state no payload totals .* development"):
        Manifest.from_json(document)


@pytest.mark.parametrize(
    ("component", "path"),
    [
        ({"files": -1}, "$.components[0].files"),
        ({"bytes": 1.5}, "$.components[0].bytes"),
        ({"byRole": {"Doc": {"files": 1, "bytes": 1}}}, "$.components[0].byRole"),
        ({"byRole": {"doc": {"files": 0, "bytes": 1}}}, "$.components[0].byRole.doc.files"),
        ({"byRole": {"doc": {"files": 1, "bytes": 1, "extra": 1}}}, "$.components[0].byRole.doc"),
    ],
)
def test_the_schema_bounds_every_total(component: dict[str, Any], path: str) -> None:
    with pytest.raises(FormatError, match=r"\(schema manifest-v2\)") as caught:
        Manifest.from_json(_document(**component))
    assert path in str(caught.value)
