"""OCI image formats on bytes: descriptors, manifests, indexes, and the walk from a root descriptor.

Everything here is pure: the caller hands in the bytes of a blob (already
checked against its digest, or checked by the caller right after) and gets
parsed values or a FormatError naming what is wrong. The same walk serves the
build (reading a source), verify (reading a kit) and push (ordering uploads),
so all three agree on what an image consists of.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.errors import FormatError, IntegrityError

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs/sha256"
LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Bounds that keep a hostile layout from costing memory or time: every JSON document read
# (index, manifest, config), nesting of indexes, and descriptors visited in one walk.
MAX_JSON = 4 << 20
MAX_DEPTH = 8
MAX_DESCRIPTORS = 100_000
# What one of those documents may cost to parse, whatever its bytes: 4 MiB of `{},{},...` is 1.4 million
# Python objects (over 100 MiB). A descriptor takes more than 100 bytes and at most four containers and
# twenty values, so an honest document of MAX_JSON bytes stays far below both.
JSON_COST = jsonio.ParseLimits(max_values=1 << 20, max_containers=256 << 10, why="an OCI JSON document")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
UNKNOWN_PLATFORM = "unknown/unknown"


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and size, and for index entries its platform."""

    media_type: str
    digest: str
    size: int
    platform: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def to_json(self, *, annotations: Mapping[str, str] | None = None) -> dict[str, object]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            data["platform"] = platform_json(self.platform)
        chosen = self.annotations if annotations is None else annotations
        if chosen:
            data["annotations"] = dict(chosen)
        return data


def blob_path(digest: str) -> str:
    """Where a blob lives inside a layout (relative), e.g. blobs/sha256/<hex>."""
    return f"{BLOBS_DIR}/{digest_hex(digest, what='digest')}"


def digest_hex(digest: str, *, what: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        if ":" in digest and not digest.startswith("sha256:"):
            raise FormatError(f"{what}: digest {digest[:80]!r} uses an algorithm other than sha256 (not supported)")
        raise FormatError(f"{what}: {str(digest)[:80]!r} is not a sha256 digest (sha256:<64 lowercase hex>)")
    return match.group(1)


def platform_string(value: object, *, what: str) -> str:
    """os/arch[/variant] from a descriptor's or config's platform fields."""
    if not isinstance(value, dict):
        raise FormatError(f"{what}: platform must be an object")
    os_name, arch, variant = value.get("os"), value.get("architecture"), value.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        raise FormatError(f"{what}: platform needs string os and architecture")
    if variant is not None and not isinstance(variant, str):
        raise FormatError(f"{what}: platform variant must be a string")
    return f"{os_name}/{arch}/{variant}" if variant else f"{os_name}/{arch}"


def platform_json(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    data = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        data["variant"] = parts[2]
    return data


def load_json_value(data: bytes, *, what: str) -> Any:
    """Parse a JSON document of at most MAX_JSON bytes; FormatError naming ``what`` otherwise.

    Duplicate keys are refused: a registry and a runtime could each pick a different one.
    """
    if len(data) > MAX_JSON:
        raise FormatError(f"{what}: {len(data)} bytes, more than the {MAX_JSON}-byte limit for OCI JSON documents")
    jsonio.check_cost(data, JSON_COST, what=what)
    try:
        return jsonio.loads_strict(data.decode("utf-8"), floats=True)
    except (UnicodeDecodeError, ValueError) as exc:  # loads_strict turns absurd nesting into ValueError too
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc


def load_json(data: bytes, *, what: str) -> dict[str, object]:
    """Parse an OCI JSON document that must be an object (index, manifest, config)."""
    value = load_json_value(data, what=what)
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def json_bytes(value: object) -> bytes:
    """Compact JSON in the given key order: the form of manifests kitbuilder generates (stable digests)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_descriptor(value: object, *, what: str) -> Descriptor:
    """A descriptor object; FormatError naming ``what`` when a field is missing or malformed."""
    if not isinstance(value, dict):
        raise FormatError(f"{what}: a descriptor must be an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise FormatError(f"{what}: mediaType {media_type!r} is missing or not a media type")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise FormatError(f"{what}: digest is missing or not a string")
    digest_hex(digest, what=what)
    size = value.get("size")
    if type(size) is not int or size < 0:
        raise FormatError(f"{what}: size {size!r} is not a non-negative integer")
    platform = None
    if "platform" in value:
        platform = platform_string(value["platform"], what=what)
    annotations = value.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise FormatError(f"{what}: annotations must map strings to strings")
    return Descriptor(media_type=media_type, digest=digest, size=size, platform=platform, annotations=annotations)


def parse_index(data: bytes, *, what: str) -> tuple[Descriptor, ...]:
    """The manifests of an image index (or of a layout's index.json)."""
    document = load_json(data, what=what)
    if document.get("schemaVersion") != 2:
        raise FormatError(f"{what}: schemaVersion must be 2")
    media_type = document.get("mediaType")
    if media_type is not None and media_type not in INDEX_TYPES:
        raise FormatError(f"{what}: mediaType {media_type!r} is not an image index")
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise FormatError(f"{what}: manifests must be a list")
    if len(manifests) > MAX_DESCRIPTORS:
        raise FormatError(f"{what}: lists {len(manifests)} manifests, more than {MAX_DESCRIPTORS}")
    return tuple(parse_descriptor(item, what=f"{what}: manifests[{n}]") for n, item in enumerate(manifests))


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


def parse_manifest(data: bytes, *, what: str, media_type: str) -> ImageManifest:
    document = load_json(data, what=what)
    if document.get("schemaVersion") != 2:
        raise FormatError(f"{what}: schemaVersion must be 2")
    declared = document.get("mediaType")
    if declared is not None and declared != media_type:
        raise FormatError(f"{what}: mediaType {declared!r} differs from its descriptor's {media_type!r}")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise FormatError(f"{what}: layers must be a list")
    if len(layers) > MAX_DESCRIPTORS:
        raise FormatError(f"{what}: lists {len(layers)} layers, more than {MAX_DESCRIPTORS}")
    return ImageManifest(
        config=parse_descriptor(document.get("config"), what=f"{what}: config"),
        layers=tuple(parse_descriptor(item, what=f"{what}: layers[{n}]") for n, item in enumerate(layers)),
    )


def config_platform(data: bytes, *, what: str) -> str | None:
    """os/arch[/variant] from an image config, or None when it names none."""
    document = load_json(data, what=what)
    if not isinstance(document.get("os"), str) or not isinstance(document.get("architecture"), str):
        return None
    return platform_string(document, what=what)


@dataclass(frozen=True)
class ImageTree:
    """Everything one image (a manifest, or an index and what it holds) references."""

    root: Descriptor
    blobs: Mapping[str, Descriptor]  # digest → descriptor, root included, each blob once
    manifests: tuple[tuple[Descriptor, bytes], ...]  # manifests and indexes, children before their parents
    layers: frozenset[str]
    platforms: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs.values())

    @property
    def layer_bytes(self) -> int:
        return sum(self.blobs[d].size for d in self.layers)


Fetch = Callable[[Descriptor, str], bytes]


class Budget:
    """Counts descriptors across walks so a layout with millions of them fails fast."""

    def __init__(self, limit: int = MAX_DESCRIPTORS) -> None:
        self.left = limit

    def spend(self, what: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise FormatError(f"{what}: more than {MAX_DESCRIPTORS} descriptors; refusing to walk further")


def walk_image(
    root: Descriptor, fetch: Fetch, *, what: str, budget: Budget | None = None, keep_documents: bool = True
) -> ImageTree:
    """Walk from ``root`` through indexes and manifests; ``fetch(descriptor, what)`` returns a JSON blob's bytes.

    ``fetch`` is asked only for indexes, manifests and image configs (for the
    platform of a manifest no index describes), each at most MAX_JSON bytes.
    FormatError for malformed documents, unknown manifest types or too deep nesting.
    """
    budget = budget or Budget()
    blobs: dict[str, Descriptor] = {}
    manifests: list[tuple[Descriptor, bytes]] = []
    layers: set[str] = set()
    platforms: list[str] = []

    def fetch_json(descriptor: Descriptor, label: str) -> bytes:
        if descriptor.size > MAX_JSON:
            raise FormatError(f"{label}: {descriptor.size} bytes, more than the {MAX_JSON}-byte limit for JSON")
        data = fetch(descriptor, label)
        if len(data) != descriptor.size:
            raise IntegrityError(f"{label}: {len(data)} bytes, its descriptor says {descriptor.size}")
        return data

    def add(descriptor: Descriptor, label: str) -> bool:
        budget.spend(label)
        known = blobs.get(descriptor.digest)
        if known is not None:
            if known.size != descriptor.size:
                raise IntegrityError(f"{label}: size {descriptor.size} differs from {known.size} given elsewhere")
            return False
        blobs[descriptor.digest] = descriptor
        return True

    def visit(descriptor: Descriptor, label: str, depth: int, inherited_platform: str | None) -> None:
        if depth > MAX_DEPTH:
            raise FormatError(f"{label}: indexes nested more than {MAX_DEPTH} deep")
        if not add(descriptor, label):
            return
        if descriptor.media_type in INDEX_TYPES:
            data = fetch_json(descriptor, label)
            children = parse_index(data, what=label)
            for number, child in enumerate(children):
                child_label = f"{label} → manifests[{number}] {child.digest}"
                if child.media_type not in INDEX_TYPES | MANIFEST_TYPES:
                    raise FormatError(f"{child_label}: media type {child.media_type!r} is not a manifest or index")
                visit(child, child_label, depth + 1, child.platform)
            manifests.append((descriptor, data if keep_documents else b""))
        elif descriptor.media_type in MANIFEST_TYPES:
            data = fetch_json(descriptor, label)
            manifest = parse_manifest(data, what=label, media_type=descriptor.media_type)
            config_label = f"{label} → config {manifest.config.digest}"
            add(manifest.config, config_label)
            platform = inherited_platform
            if platform is None and manifest.config.media_type in CONFIG_TYPES:
                platform = config_platform(fetch_json(manifest.config, config_label), what=config_label)
            if platform is not None and platform != UNKNOWN_PLATFORM and platform not in platforms:
                platforms.append(platform)
            for number, layer in enumerate(manifest.layers):
                add(layer, f"{label} → layers[{number}] {layer.digest}")
                layers.add(layer.digest)
            manifests.append((descriptor, data if keep_documents else b""))
        else:
            raise FormatError(f"{label}: media type {descriptor.media_type!r} is not an image manifest or index")

    visit(root, what, 0, root.platform if root.media_type in MANIFEST_TYPES else None)
    return ImageTree(
        root=root,
        blobs=blobs,
        manifests=tuple(manifests),
        layers=frozenset(layers),
        platforms=tuple(platforms),
    )


def platform_candidates(root: Descriptor, fetch: Fetch, *, what: str) -> list[tuple[Descriptor, str | None]]:
    """Every image manifest under ``root`` with its platform (from its index entry, else from its config)."""
    found: list[tuple[Descriptor, str | None]] = []
    budget = Budget()

    def visit(descriptor: Descriptor, label: str, depth: int) -> None:
        budget.spend(label)
        if depth > MAX_DEPTH:
            raise FormatError(f"{label}: indexes nested more than {MAX_DEPTH} deep")
        if descriptor.size > MAX_JSON:
            raise FormatError(f"{label}: {descriptor.size} bytes, more than the {MAX_JSON}-byte limit for JSON")
        if descriptor.media_type in INDEX_TYPES:
            for number, child in enumerate(parse_index(fetch(descriptor, label), what=label)):
                visit(child, f"{label} → manifests[{number}] {child.digest}", depth + 1)
        elif descriptor.media_type in MANIFEST_TYPES:
            platform = descriptor.platform
            if platform is None:
                manifest = parse_manifest(fetch(descriptor, label), what=label, media_type=descriptor.media_type)
                if manifest.config.media_type in CONFIG_TYPES and manifest.config.size <= MAX_JSON:
                    platform = config_platform(fetch(manifest.config, f"{label} → config"), what=f"{label} → config")
            found.append((descriptor, platform))

    visit(root, what, 0)
    return found


def platform_matches(candidate: str | None, wanted: str) -> bool:
    """``linux/arm64`` matches linux/arm64 and linux/arm64/v8; ``linux/arm/v7`` only itself."""
    if candidate is None:
        return False
    if candidate == wanted:
        return True
    return len(wanted.split("/")) == 2 and candidate.rsplit("/", 1)[0] == wanted and candidate.count("/") == 2
