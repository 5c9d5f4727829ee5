"""The verify/inspect side: is the kit's images/ tree one consistent OCI image layout?

Pure: the caller passes what the signed manifest says about every file under
images/ (size and SHA-256, content already checked against them) and a way to
read a small member's bytes. Nothing here opens a kit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kitbuilder.core.images import ImageRecord
from kitbuilder.errors import FormatError, IntegrityError
from kitbuilder.oci import layout
from kitbuilder.oci.layout import Descriptor, ImageTree

PREFIX = "images/"
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")


@dataclass(frozen=True)
class ImageSummary:
    """An image as inspect shows it: its signed record (checked against the layout) and its layers' bytes."""

    record: ImageRecord
    layer_bytes: int

    @property
    def ref(self) -> str:
        return self.record.ref

    def to_json(self) -> dict[str, object]:
        # The signed record as the manifest writes it, its size named for what it is beside the layers' bytes.
        data = self.record.to_json()
        data["totalBytes"] = data.pop("size")
        data["layerBytes"] = self.layer_bytes
        return data


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

    def to_json(self) -> dict[str, object]:
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
    records: Sequence[ImageRecord],
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
    records: Sequence[ImageRecord],
    keep_documents: bool = True,
) -> CheckedLayout:
    """``check_layout``, also returning every image's tree (with its manifests' bytes unless not ``keep_documents``)."""
    signed = tuple(records)
    files = {path[len(PREFIX) :]: value for path, value in entries.items() if path.startswith(PREFIX)}
    if not files:
        if signed:
            raise IntegrityError(f"manifest.json records {len(signed)} image(s), but the kit has no images/ layout")
        return CheckedLayout(LayoutSummary((), 0, 0, 0), {}, {})
    blobs = _blob_files(files)
    marker_path = PREFIX + layout.OCI_LAYOUT_FILE
    version = layout.load_json(read_member(marker_path), what=marker_path).get("imageLayoutVersion")
    if version != layout.LAYOUT_VERSION:
        raise FormatError(f"{marker_path}: imageLayoutVersion {version!r}, expected {layout.LAYOUT_VERSION!r}")
    index_path = PREFIX + layout.INDEX_FILE
    top = layout.parse_index(read_member(index_path), what=index_path)
    named = _walk_images(top, blobs, read_member, index_path, keep_documents)
    summaries = _match_records(signed, named, index_path)
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


def _blob_files(files: Mapping[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """digest → (size, kit path) of every blob; IntegrityError for a file an OCI layout does not have."""
    for name in (layout.OCI_LAYOUT_FILE, layout.INDEX_FILE):
        if name not in files:
            raise IntegrityError(f"{PREFIX}{name}: missing; images/ is not a complete OCI image layout")
    blobs: dict[str, tuple[int, str]] = {}
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
    return blobs


def _walk_images(
    top: Sequence[Descriptor],
    blobs: Mapping[str, tuple[int, str]],
    read_member: Callable[[str], bytes],
    index_path: str,
    keep_documents: bool,
) -> dict[str, tuple[Descriptor, ImageTree]]:
    """ref → (index.json entry, tree) of every named image; every blob present and referenced by one."""

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
    return named


def _match_records(
    records: Sequence[ImageRecord], named: Mapping[str, tuple[Descriptor, ImageTree]], index_path: str
) -> list[ImageSummary]:
    """Every record names an image of index.json with the same digest and facts, and vice versa."""
    summaries: list[ImageSummary] = []
    seen: set[str] = set()
    for number, record in enumerate(records):
        where = f"manifest.json: images[{number}]"
        ref = record.ref
        if ref not in named:
            raise IntegrityError(f"{where}: {ref} is not named in {index_path}")
        if ref in seen:
            raise IntegrityError(f"{where}: {ref} is recorded twice")
        seen.add(ref)
        descriptor, tree = named[ref]
        if record.digest != descriptor.digest:
            raise IntegrityError(
                f"{where}: {ref} has digest {record.digest}, but {index_path} gives {descriptor.digest}"
            )
        observed = ImageRecord(
            ref=ref,
            digest=descriptor.digest,
            media_type=descriptor.media_type,
            platforms=tree.platforms,
            size=tree.size,
            layers=len(tree.layers),
        )
        recorded = record.to_json()
        for key, value in observed.to_json().items():
            if recorded[key] != value:
                raise IntegrityError(f"{where}: {ref} {key} is {recorded[key]!r}, but the layout gives {value!r}")
        summaries.append(ImageSummary(record=observed, layer_bytes=tree.layer_bytes))
    extra = sorted(set(named) - seen)
    if extra:
        raise IntegrityError(f"{index_path}: names {extra[0]}, which manifest.json does not record")
    return summaries
