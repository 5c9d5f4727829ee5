"""What a signed manifest says about one container image (manifest.json ``images[]``).

One model for the build (oci/plan records it), the check of a kit's images/ layout
(oci/check compares it with the layout) and the commands that list or push images.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kitbuilder.core import fields


@dataclass(frozen=True)
class ImageRecord:
    """One ``images[]`` entry of manifest.json (schemas/manifest.schema.json)."""

    ref: str
    digest: str  # "sha256:<hex>" of the image's top manifest or index
    media_type: str
    platforms: tuple[str, ...]
    size: int  # bytes of every blob the image references, manifests included
    layers: int

    def to_json(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": list(self.platforms),
            "size": self.size,
            "layers": self.layers,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object], *, what: str = "manifest.json: images[]") -> ImageRecord:
        """The record of a (schema-checked) ``images[]`` entry; FormatError naming the field if it is not one."""
        read = fields.Fields(document, what)
        record = cls(
            ref=read.required_text("ref"),
            digest=read.required_text("digest"),
            media_type=read.required_text("mediaType"),
            platforms=_texts(read, "platforms"),
            size=_count(read, "size"),
            layers=_count(read, "layers"),
        )
        read.finish()
        return record


def _count(read: fields.Fields, name: str) -> int:
    """A required non-negative integer field."""
    return fields.integer(read.get(name, True), 0, fields.INT64_MAX, lambda message: read.fail(name, message))


def _texts(read: fields.Fields, name: str) -> tuple[str, ...]:
    """A required array of strings (possibly empty)."""
    value = read.get(name, True)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise read.fail(name, f"expected a list of strings, got {fields.type_name(value)} {fields.show(value)}")
    return tuple(value)
