"""The verify side: check_layout on the images/ tree as a kit's signed manifest describes it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from kitbuilder.core.images import ImageRecord
from kitbuilder.core.spec import ImageSpec
from kitbuilder.errors import FormatError, IntegrityError
from kitbuilder.oci.check import check_layout
from kitbuilder.oci.plan import plan_images
from tests.factories.oci_images import OCI_INDEX, OCI_MANIFEST, ImageSet
from tests.images.test_plan import SPEC, read_all


class Layout:
    """A kit's images/ members in memory: what the signed manifest lists, and the bytes behind it."""

    def __init__(self, members: dict[str, bytes], records: list[dict[str, Any]]) -> None:
        self.members = dict(members)
        self.records = records
        self.reads: list[str] = []

    def put(self, path: str, data: bytes) -> None:
        self.members[path] = data

    def add_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.members[f"images/blobs/sha256/{digest}"] = data
        return "sha256:" + digest

    def index(self) -> dict[str, Any]:
        return dict(json.loads(self.members["images/index.json"]))

    def set_index(self, document: dict[str, Any]) -> None:
        self.members["images/index.json"] = json.dumps(document).encode()

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        return self.members[path]

    def check(self) -> Any:
        entries = {p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in self.members.items()}
        return check_layout(entries, self.read, records=self.signed())

    def signed(self) -> list[ImageRecord]:
        """The records as the manifest holds them (tests edit the JSON form)."""
        return [ImageRecord.from_json(r) for r in self.records]


@pytest.fixture
def layout(image_set: ImageSet) -> Layout:
    result = plan_images(
        [
            ImageSpec("registry.local/s/app-a:1", image_set.layout, source_ref="app-a"),
            ImageSpec("registry.local/s/app-b:1", image_set.layout, source_ref="app-b"),
            ImageSpec("registry.local/s/multi:1", image_set.layout, source_ref="multi"),
        ],
        spec_path=SPEC,
    )
    return Layout(read_all(result), [r.to_json() for r in result.images])


def blob(digest: str) -> str:
    return "images/blobs/sha256/" + digest.split(":")[1]


def test_a_planned_layout_checks_and_reports_what_sharing_saved(layout: Layout) -> None:
    summary = layout.check()
    assert [i.ref for i in summary.images] == [r["ref"] for r in layout.records]
    assert summary.blob_count == len(layout.members) - 2
    assert summary.stored_bytes == sum(len(d) for p, d in layout.members.items() if "/blobs/" in p)
    assert summary.referenced_bytes == sum(r["size"] for r in layout.records)
    assert summary.saved_bytes > 0  # the base layer is stored once for four manifests
    multi = summary.to_json()["images"][2]
    assert multi["platforms"] == ["linux/amd64", "linux/arm64/v8"] and multi["layers"] == 3
    assert multi["layerBytes"] < multi["totalBytes"] == layout.records[2]["size"]
    # Layers are never read: only JSON documents (layout marker, index, manifests, configs).
    layer_paths = {
        blob(layer["digest"]) for p in layout.reads for layer in json.loads(layout.members[p]).get("layers", [])
    }
    assert not layer_paths & set(layout.reads)


def test_blob_whose_name_is_not_its_digest(layout: Layout) -> None:
    manifest = blob(layout.records[0]["digest"])
    layer_path = blob(json.loads(layout.members[manifest])["layers"][1]["digest"])
    layout.put(layer_path, layout.members[layer_path] + b"x")
    with pytest.raises(
        IntegrityError, match=rf"{layer_path}: content has sha256 [0-9a-f]+, which differs from its name"
    ):
        layout.check()


def test_descriptor_size_differs_from_the_file(layout: Layout) -> None:
    manifest = json.loads(layout.members[blob(layout.records[0]["digest"])])
    manifest["layers"][0]["size"] += 7
    digest = layout.add_blob(json.dumps(manifest).encode())
    index = layout.index()
    index["manifests"][0].update(digest=digest, size=len(layout.members[blob(digest)]))
    layout.set_index(index)
    layout.records[0]["digest"] = digest
    with pytest.raises(IntegrityError, match=r"images/blobs/sha256/[0-9a-f]+: \d+ bytes, but a descriptor in .* gives"):
        layout.check()


def test_referenced_blob_missing(layout: Layout) -> None:
    manifest = json.loads(layout.members[blob(layout.records[1]["digest"])])
    del layout.members[blob(manifest["config"]["digest"])]
    with pytest.raises(IntegrityError, match=rf"config {manifest['config']['digest']}: references blob .* missing"):
        layout.check()


def test_index_pointing_to_a_missing_manifest(layout: Layout) -> None:
    del layout.members[blob(layout.records[0]["digest"])]
    with pytest.raises(
        IntegrityError, match=r"manifests\[0\] sha256:[0-9a-f]+: references blob .*missing from the kit"
    ):
        layout.check()
    assert "images/oci-layout" in layout.reads


def test_child_manifest_of_an_index_missing(layout: Layout) -> None:
    children = json.loads(layout.members[blob(layout.records[2]["digest"])])["manifests"]
    del layout.members[blob(children[1]["digest"])]
    with pytest.raises(IntegrityError, match=r"manifests\[2\] .* → manifests\[1\] .*missing from the kit"):
        layout.check()


def test_unreferenced_blob(layout: Layout) -> None:
    stray = layout.add_blob(b"nobody points here")
    layout.add_blob(b"nor here")
    with pytest.raises(IntegrityError, match=r"nothing in images/index.json references it \(and 1 more\)"):
        layout.check()
    assert stray


def test_files_outside_the_layout_shape(layout: Layout) -> None:
    layout.put("images/README", b"hello")
    with pytest.raises(IntegrityError, match="images/README: not part of an OCI layout"):
        layout.check()


def test_records_must_match_index(layout: Layout) -> None:
    layout.records[1]["digest"] = layout.records[0]["digest"]
    with pytest.raises(IntegrityError, match=r"images\[1\]: registry.local/s/app-b:1 has digest .* but .* gives"):
        layout.check()


def test_record_for_an_image_not_in_index(layout: Layout) -> None:
    layout.records.append({**layout.records[0], "ref": "registry.local/s/ghost:1"})
    with pytest.raises(
        IntegrityError, match=r"images\[3\]: registry.local/s/ghost:1 is not named in images/index.json"
    ):
        layout.check()


def test_index_image_without_record(layout: Layout) -> None:
    layout.records.pop()
    with pytest.raises(IntegrityError, match="names registry.local/s/multi:1, which manifest.json does not record"):
        layout.check()


def test_record_facts_must_match_the_layout(layout: Layout) -> None:
    layout.records[0]["layers"] = 5
    with pytest.raises(IntegrityError, match=r"app-a:1 layers is 5, but the layout gives 2"):
        layout.check()


def test_records_without_layout(layout: Layout) -> None:
    with pytest.raises(IntegrityError, match="records 3 image"):
        check_layout({}, layout.read, records=layout.signed())
    assert check_layout({}, layout.read, records=[]).to_json()["blobs"] == 0


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("images/oci-layout", b'{"imageLayoutVersion": "2.0.0"}', "imageLayoutVersion '2.0.0'"),
        ("images/oci-layout", b"[]", "expected a JSON object"),
        ("images/index.json", b'{"schemaVersion": 2, "manifests": {}}', "manifests must be a list"),
        ("images/index.json", b'{"schemaVersion": 1, "manifests": []}', "schemaVersion must be 2"),
        ("images/index.json", b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_layout_json(layout: Layout, path: str, data: bytes, message: str) -> None:
    layout.put(path, data)
    with pytest.raises(FormatError, match=message):
        layout.check()


def test_malformed_manifest_json(layout: Layout) -> None:
    digest = layout.add_blob(b'{"schemaVersion": 2, "config": 5, "layers": []}')
    index = layout.index()
    index["manifests"].append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": 47,
            "annotations": {"org.opencontainers.image.ref.name": "x"},
        }
    )
    layout.set_index(index)
    with pytest.raises(FormatError, match="config: a descriptor must be an object"):
        layout.check()


def test_json_documents_are_bounded(layout: Layout) -> None:
    layout.put("images/index.json", b" " * (4 << 20) + b"{}")
    with pytest.raises(FormatError, match="more than the 4194304-byte limit"):
        layout.check()
    assert "images/index.json" not in layout.reads


def test_index_nesting_is_bounded(layout: Layout) -> None:
    inner = {"mediaType": OCI_MANIFEST, "digest": layout.records[0]["digest"], "size": 0}
    inner["size"] = len(layout.members[blob(inner["digest"])])
    for _ in range(10):
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [inner]}).encode()
        inner = {"mediaType": OCI_INDEX, "digest": layout.add_blob(data), "size": len(data)}
    index = layout.index()
    index["manifests"].append({**inner, "annotations": {"org.opencontainers.image.ref.name": "deep"}})
    layout.set_index(index)
    with pytest.raises(FormatError, match="indexes nested more than 8 deep"):
        layout.check()
