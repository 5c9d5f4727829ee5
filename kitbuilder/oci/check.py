"""The verify/inspect side: is the kit's images/ tree one consistent OCI image layout?

Pure: the caller passes what the signed manifest says about every file under
images/ (size and SHA-256, content already checked against them) and a way to
read a small member's bytes. Nothing here opens a kit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kitbuilder.errors import FormatError, IntegrityError
from kitbuilder.oci import layout
from kitbuilder.oci.layout import Descriptor, ImageTree

PREFIX = "images/"
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")


@dataclass(frozen=True)
class ImageSummary:
    ref: str
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    layers: int
    layer_bytes: int
    total_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": list(self.platforms),
            "layers": self.layers,
            "layerBytes": self.layer_bytes,
            "totalBytes": self.total_bytes,
        }


@dataclass(frozen=True)
class LayoutSummary:
    images: tuple[ImageSummary, ...]
    blob_count: int
    stored_bytes: int
    referenced_bytes: int

    @property
    def saved_bytes(self) -> int:
        """Bytes not stored because images share blobs."""
        return self.referenced_bytes - self.stored_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "images": [image.to_json() for image in self.images],
            "blobs": self.blob_count,
            "storedBytes": self.stored_bytes,
            "referencedBytes": self.referenced_bytes,
            "sharedBytesSaved": self.saved_bytes,
        }


@dataclass(frozen=True)
class CheckedLayout:
    """The summary plus each image's tree, for callers (push) that go on to use the layout."""

    summary: LayoutSummary
    trees: Mapping[str, ImageTree]  # ref → tree
    blob_paths: Mapping[str, str]  # digest → kit path


def check_layout(
    entries: Mapping[str, tuple[int, str]],
    read_member: Callable[[str], bytes],
    *,
    records: Sequence[dict[str, Any]],
) -> LayoutSummary:
    """Check images/ against itself and the manifest's image records; return what inspect shows.

    ``entries`` maps every kit file under images/ to its signed (size, sha256 hex);
    ``read_member`` returns a member's bytes, already checked against that digest.
    IntegrityError (4): a blob whose name is not its SHA-256, a descriptor whose size
    differs from the file, a referenced blob missing, a file nothing references, a
    record not matching index.json. FormatError (5): malformed oci-layout, index or
    manifest JSON, or a layout beyond the walk's bounds (nesting, descriptor count).
    """
    return walk_layout(entries, read_member, records=records, keep_documents=False).summary


def walk_layout(
    entries: Mapping[str, tuple[int, str]],
    read_member: Callable[[str], bytes],
    *,
    records: Sequence[dict[str, Any]],
    keep_documents: bool = True,
) -> CheckedLayout:
    """``check_layout``, also returning every image's tree (with its manifests' bytes unless not ``keep_documents``)."""
    files = {path[len(PREFIX) :]: value for path, value in entries.items() if path.startswith(PREFIX)}
    if not files:
        if records:
            raise IntegrityError(f"manifest.json records {len(records)} image(s), but the kit has no images/ layout")
        return CheckedLayout(LayoutSummary((), 0, 0, 0), {}, {})
    for name in (layout.OCI_LAYOUT_FILE, layout.INDEX_FILE):
        if name not in files:
            raise IntegrityError(f"{PREFIX}{name}: missing; images/ is not a complete OCI image layout")
    blobs: dict[str, tuple[int, str]] = {}  # digest → (size, kit path)
    for name, (size, sha256) in sorted(files.items()):
        if name in (layout.OCI_LAYOUT_FILE, layout.INDEX_FILE):
            if size > layout.MAX_JSON:
                raise FormatError(f"{PREFIX}{name}: {size} bytes, more than the {layout.MAX_JSON}-byte limit")
            continue
        match = _BLOB_NAME.fullmatch(name)
        if match is None:
            raise IntegrityError(
                f"{PREFIX}{name}: not part of an OCI layout (only oci-layout, index.json and blobs/sha256/<hex>)"
            )
        if match.group(1) != sha256:
            raise IntegrityError(f"{PREFIX}{name}: content has sha256 {sha256}, which differs from its name")
        blobs["sha256:" + sha256] = (size, PREFIX + name)

    marker_path = PREFIX + layout.OCI_LAYOUT_FILE
    version = layout.load_json(read_member(marker_path), what=marker_path).get("imageLayoutVersion")
    if version != layout.LAYOUT_VERSION:
        raise FormatError(f"{marker_path}: imageLayoutVersion {version!r}, expected {layout.LAYOUT_VERSION!r}")
    index_path = PREFIX + layout.INDEX_FILE
    top = layout.parse_index(read_member(index_path), what=index_path)

    def fetch(descriptor: Descriptor, label: str) -> bytes:
        found = blobs.get(descriptor.digest)
        if found is None:
            raise IntegrityError(f"{label}: references blob {descriptor.digest}, which is missing from the kit")
        if found[0] != descriptor.size:
            raise IntegrityError(f"{found[1]}: {found[0]} bytes, but {label} gives size {descriptor.size}")
        return read_member(found[1])

    budget = layout.Budget()
    referenced: set[str] = set()
    named: dict[str, tuple[Descriptor, ImageTree]] = {}
    for number, descriptor in enumerate(top):
        label = f"{index_path}: manifests[{number}] {descriptor.digest}"
        ref = descriptor.annotations.get(layout.REF_NAME)
        if ref is None:
            raise IntegrityError(f"{label}: has no {layout.REF_NAME} annotation; every image in a kit is named")
        if ref in named:
            raise IntegrityError(f"{label}: reference {ref!r} is given twice")
        tree = layout.walk_image(descriptor, fetch, what=label, budget=budget, keep_documents=keep_documents)
        for digest, blob in tree.blobs.items():
            found = blobs.get(digest)
            if found is None:
                raise IntegrityError(f"{label}: references blob {digest} ({blob.media_type}), missing from the kit")
            if found[0] != blob.size:
                raise IntegrityError(f"{found[1]}: {found[0]} bytes, but a descriptor in {label} gives {blob.size}")
            referenced.add(digest)
        named[ref] = (descriptor, tree)
    unreferenced = sorted(set(blobs) - referenced)
    if unreferenced:
        more = f" (and {len(unreferenced) - 1} more)" if len(unreferenced) > 1 else ""
        raise IntegrityError(f"{blobs[unreferenced[0]][1]}: nothing in {index_path} references it{more}")

    summaries = _match_records(records, named, index_path)
    return CheckedLayout(
        summary=LayoutSummary(
            images=tuple(summaries),
            blob_count=len(blobs),
            stored_bytes=sum(size for size, _ in blobs.values()),
            referenced_bytes=sum(tree.size for _, tree in named.values()),
        ),
        trees={ref: tree for ref, (_, tree) in named.items()},
        blob_paths={digest: path for digest, (_, path) in blobs.items()},
    )


def _match_records(
    records: Sequence[dict[str, Any]], named: Mapping[str, tuple[Descriptor, ImageTree]], index_path: str
) -> list[ImageSummary]:
    """Every record names an image of index.json with the same digest and facts, and vice versa."""
    summaries: list[ImageSummary] = []
    seen: set[str] = set()
    for number, record in enumerate(records):
        where = f"manifest.json: images[{number}]"
        ref = record.get("ref")
        if not isinstance(ref, str):
            raise FormatError(f"{where}: ref must be a string")
        if ref not in named:
            raise IntegrityError(f"{where}: {ref} is not named in {index_path}")
        if ref in seen:
            raise IntegrityError(f"{where}: {ref} is recorded twice")
        seen.add(ref)
        descriptor, tree = named[ref]
        if record.get("digest") != descriptor.digest:
            raise IntegrityError(
                f"{where}: {ref} has digest {record.get('digest')}, but {index_path} gives {descriptor.digest}"
            )
        observed = {
            "mediaType": descriptor.media_type,
            "platforms": list(tree.platforms),
            "size": tree.size,
            "layers": len(tree.layers),
        }
        for key, value in observed.items():
            if record.get(key) != value:
                raise IntegrityError(f"{where}: {ref} {key} is {record.get(key)!r}, but the layout gives {value!r}")
        summaries.append(
            ImageSummary(
                ref=ref,
                digest=descriptor.digest,
                media_type=descriptor.media_type,
                platforms=tree.platforms,
                layers=len(tree.layers),
                layer_bytes=tree.layer_bytes,
                total_bytes=tree.size,
            )
        )
    extra = sorted(set(named) - seen)
    if extra:
        raise IntegrityError(f"{index_path}: names {extra[0]}, which manifest.json does not record")
    return summaries
