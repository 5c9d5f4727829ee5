"""What a signed manifest says about one container image (manifest.json ``images[]``).

One model for the build (oci/plan records it), the check of a kit's images/ layout
(oci/check compares it with the layout) and the commands that list or push images.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kitbuilder.core import fields

_KEYS = frozenset({"ref", "digest", "mediaType", "platforms", "size", "layers"})


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
        fields.known_keys(document, _KEYS, what=what)
        return cls(
            ref=fields.text(document, "ref", what=what),
            digest=fields.text(document, "digest", what=what),
            media_type=fields.text(document, "mediaType", what=what),
            platforms=fields.texts(document, "platforms", what=what),
            size=fields.integer(document, "size", what=what),
            layers=fields.integer(document, "layers", what=what),
        )


def image_records(items: Iterable[ImageRecord | Mapping[str, object]]) -> tuple[ImageRecord, ...]:
    """Records from manifest.json ``images``, whether already typed or still the parsed JSON objects.

    Transitional: ``Manifest.images`` holds the schema-checked objects until core/manifest.py builds
    ``ImageRecord``s itself; then every caller passes records and this is the identity.
    """
    return tuple(
        item if isinstance(item, ImageRecord) else ImageRecord.from_json(item, what=f"manifest.json: images[{n}]")
        for n, item in enumerate(items)
    )
