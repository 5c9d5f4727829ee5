"""The in-toto shape check of an attestation: the statement by the library, the predicate's depth by kit.

The in-toto library reads a predicate as a free-form Struct; kit hands it a stand-in and bounds the
predicate's nesting itself at the depth the library's parser allowed (50 objects and arrays), so a
provenance listing every input of a large kit is not converted for nothing.
"""

from __future__ import annotations

from typing import Any

from kitbuilder.core.provenance import PROVENANCE_MEMBER
from kitbuilder.ops.verify import MAX_PREDICATE_DEPTH
from tests.factories.cli import run_json, run_kit
from tests.integration.test_hostile_metadata import (
    DOCS,
    GOOD_PREDICATE,
    assert_nothing_recorded,
    assert_refused,
    attestation,
    craft_kit,
    metadata_subjects,
    pub,
)

__all__ = ["pub"]  # the fixture, imported for the tests below


def _nested(levels: int, *, inner: Any) -> dict[str, Any]:
    """A predicate of ``levels`` nested objects (itself included) around ``inner``."""
    predicate: Any = inner
    for _ in range(levels):
        predicate = {"a": predicate}
    assert isinstance(predicate, dict)
    return predicate


def _kit(tmp_path: Any, predicate: dict[str, Any]) -> Any:
    return craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {
            "attestations/other.dsse.json": attestation(
                metadata_subjects(s), predicate, predicate_type="https://example.com/other/v1"
            )
        },
    )


def test_a_predicate_at_the_depth_bound_verifies(tmp_path: Any, pub: Any) -> None:
    kit = _kit(tmp_path, _nested(MAX_PREDICATE_DEPTH - 1, inner=[1]))
    code, report = run_json("verify", kit, "--key", pub)
    assert code == 0 and report["attestations"][0]["path"] == "attestations/other.dsse.json"


def test_a_predicate_one_level_past_the_bound_is_refused(tmp_path: Any, pub: Any) -> None:
    kit = _kit(tmp_path, _nested(MAX_PREDICATE_DEPTH - 1, inner=[[1]]))
    assert_refused(run_kit("verify", kit, "--key", pub), 5, "attestations/other.dsse.json", "nested more than 50")
    assert_nothing_recorded()


def test_an_empty_predicate_is_still_refused_by_the_library(tmp_path: Any, pub: Any) -> None:
    kit = _kit(tmp_path, {})
    assert_refused(run_kit("verify", kit, "--key", pub), 5, "attestations/other.dsse.json", "Predicate object required")


def test_a_provenance_listing_many_inputs_verifies(tmp_path: Any, pub: Any) -> None:
    inputs = [{"name": f"docs/{n}.md", "digest": {"sha256": f"{n:064x}"}} for n in range(5000)]
    predicate = {**GOOD_PREDICATE, "buildDefinition": {**GOOD_PREDICATE["buildDefinition"]}}
    predicate["buildDefinition"]["resolvedDependencies"] = inputs
    kit = craft_kit(
        tmp_path / "kit.kit.tar.zst",
        DOCS,
        extra=lambda s: {PROVENANCE_MEMBER: attestation(metadata_subjects(s), predicate)},
    )
    code, report = run_json("verify", kit, "--key", pub)
    assert code == 0 and report["attestations"][0]["path"] == PROVENANCE_MEMBER
