"""The typed records of manifest.json ``images[]`` and ``sboms[]``: one round trip each against the schema."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from kitbuilder.core.images import ImageRecord
from kitbuilder.core.manifest import Manifest
from kitbuilder.core.sbom import ShippedSbom
from kitbuilder.errors import FormatError

IMAGE = ImageRecord(
    ref="registry.local/stellaops/app:1.0",
    digest="sha256:" + "ab" * 32,
    media_type="application/vnd.oci.image.index.v1+json",
    platforms=("linux/amd64", "linux/arm64/v8"),
    size=123_456,
    layers=3,
)
SHIPPED = ShippedSbom(
    path="sbom/runner/runner.spdx.json",
    component="runner",
    subject="registry.local/stellaops/runner",
    format="SPDX",
    spec_version="2.3",
)


def item_schema(field: str) -> dict[str, Any]:
    text = resources.files("kitbuilder.schemas").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)["properties"][field]["items"]
    return schema


@pytest.mark.parametrize(("field", "record"), [("images", IMAGE), ("sboms", SHIPPED)])
def test_a_record_round_trips_through_json_its_schema_accepts(field: str, record: ImageRecord | ShippedSbom) -> None:
    schema = item_schema(field)
    document = json.loads(json.dumps(record.to_json()))
    jsonschema.Draft7Validator(schema).validate(document)
    # Every field the schema defines is a field of the model: none is dropped on the way in or out.
    assert set(document) == set(schema["properties"])
    assert type(record).from_json(document) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": "12"}, "manifest.json: images[]: size: expected an integer, got a string '12'"),
        ({"size": -1}, "manifest.json: images[]: size: -1 is out of range (0..9223372036854775807)"),
        ({"layers": True}, "manifest.json: images[]: layers: expected an integer, got a boolean True"),
        (
            {"platforms": ["linux/amd64", 3]},
            "manifest.json: images[]: platforms: expected a list of strings, got a list ['linux/amd64', 3]",
        ),
        (
            {"annotations": {}},
            "manifest.json: images[]: unknown field 'annotations' (allowed: digest, layers, mediaType, platforms, "
            "ref, size); kit would not know what to do with it",
        ),
    ],
)
def test_an_image_record_the_schema_refuses_is_refused_by_from_json(change: dict[str, object], message: str) -> None:
    document = {**IMAGE.to_json(), **change}
    assert not jsonschema.Draft7Validator(item_schema("images")).is_valid(document)
    with pytest.raises(FormatError) as caught:
        ImageRecord.from_json(document)
    assert str(caught.value) == message


def test_a_shipped_sbom_of_an_unknown_format_is_refused() -> None:
    document = {**SHIPPED.to_json(), "format": "SWID"}
    assert not jsonschema.Draft7Validator(item_schema("sboms")).is_valid(document)
    with pytest.raises(FormatError, match=r"^manifest.json: sboms\[\]: format: 'SWID' is not one of CycloneDX, SPDX$"):
        ShippedSbom.from_json(document)


def test_the_manifest_names_the_bad_image_record() -> None:
    # Manifest.from_json builds the records itself: the one bad entry is named by its position.
    from tests.unit.core.test_manifest_parts import manifest_document

    document = manifest_document(images=[IMAGE.to_json(), {**IMAGE.to_json(), "ref": None}])
    with pytest.raises(FormatError, match=r"^manifest.json: \$.images\[1\].ref: None is not of type 'string'"):
        Manifest.from_json(document)
    good = manifest_document(images=[IMAGE.to_json(), IMAGE.to_json()])
    assert Manifest.from_json(good).images == (IMAGE, IMAGE)
