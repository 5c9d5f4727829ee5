"""The kit's own SBOM: ``render_kit_sbom`` writes ``sbom/kit.cdx.json`` in CycloneDX 1.6.

The kit is ``metadata.component``; each kit component is a component carrying the inventory of its files (count,
bytes, digest of its ``SHA256SUMS`` lines), not the files themselves, so the SBOM's size follows the number of
components, never the number of files; container images carry their manifest digests and an ``oci`` purl;
shipped SBOMs are ``bom`` external references on what they describe. The bytes depend only on the inputs,
so rebuilds stay identical, and the document is checked against the 1.6 schema (``cyclonedx``) before it is
written.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.core.sbom.cyclonedx import validate_cyclonedx
from kitbuilder.core.sbom.model import (
    KIT_SBOM_PATH,
    KIT_SPEC_VERSION,
    KitComponent,
    SbomError,
    SbomImage,
    ShippedSbom,
)

# The serial number is a name-based (v5) UUID of the document's SHA-256, in kitbuilder's own namespace.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:kitbuilder:kit-sbom")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_OCI_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
# Roles whose files are executed by `kit apply`; everything else a kit carries is data to it.
_APPLICATION_ROLES = frozenset({"migration", "backfill"})
# A JSON object of the document being built (private: the public result is bytes).
_Json = dict[str, Any]


def render_kit_sbom(
    *,
    name: str,
    version: str,
    product: str,
    tool_version: str,
    created: str | None,
    components: Sequence[KitComponent],
    images: Sequence[SbomImage],
    shipped: Sequence[ShippedSbom],
    shipped_sha256: Mapping[str, str],
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of a kit, checked against the 1.6 schema; identical inputs, identical bytes.

    ``components`` carry their inventories (``component_inventories`` of the kit's files); ``shipped_sha256``
    maps the kit path of each shipped SBOM to its SHA-256. ``created`` (RFC 3339 UTC, from SOURCE_DATE_EPOCH)
    becomes ``metadata.timestamp``; without it there is none. Raises SbomError when the inputs do not make a
    valid SBOM (a malformed digest, a shipped SBOM that is not among the files, two components with one bom-ref).
    """
    where = KIT_SBOM_PATH
    groups = _groups(components, where)
    containers: dict[str, _Json] = {}
    for image in images:
        if image.ref in containers:
            raise SbomError(where, f"image:{image.ref}", "two images have this ref")
        containers[image.ref] = _container(image, where)
    _attach_shipped(shipped, groups, containers, shipped_sha256, where)
    for component in (*groups.values(), *containers.values()):
        if "externalReferences" in component:
            component["externalReferences"].sort(key=lambda r: r["url"])

    document: _Json = {
        "$schema": f"http://cyclonedx.org/schema/bom-{KIT_SPEC_VERSION}.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": KIT_SPEC_VERSION,
        "version": 1,
        "metadata": _metadata(name, version, product, tool_version, created),
        "components": [*groups.values(), *containers.values()],
    }
    digest = hashlib.sha256(jsonio.dump_compact(document)).hexdigest()
    document["serialNumber"] = f"urn:uuid:{uuid.uuid5(_SERIAL_NAMESPACE, f'sha256:{digest}')}"
    validate_cyclonedx(document, KIT_SPEC_VERSION, where)
    return jsonio.dump_pretty(document)


def _metadata(name: str, version: str, product: str, tool_version: str, created: str | None) -> _Json:
    """``metadata``: the kit as the SBOM's subject, kitbuilder as its tool, ``created`` as its timestamp."""
    metadata: _Json = {
        "component": {
            "bom-ref": f"kit:{name}@{version}",
            "type": "application",
            "name": name,
            "version": version,
            "properties": [{"name": "kitbuilder:product", "value": product}],
        },
        "lifecycles": [{"phase": "build"}],
        "tools": {
            "components": [
                {
                    "bom-ref": f"tool:kitbuilder@{tool_version}",
                    "type": "application",
                    "name": "kitbuilder",
                    "version": tool_version,
                }
            ]
        },
    }
    if created is not None:
        metadata["timestamp"] = created
    return metadata


def _groups(components: Sequence[KitComponent], where: str) -> dict[str, _Json]:
    """One component per kit component (id → component), in the given order, with its inventory."""
    groups: dict[str, _Json] = {}
    for kit_component in components:
        if kit_component.id in groups:
            raise SbomError(where, f"component:{kit_component.id}", "two kit components have this id")
        inventory = kit_component.inventory
        if not _SHA256_HEX.fullmatch(inventory.sha256):
            raise SbomError(
                where, f"component:{kit_component.id}", f"sha256 {inventory.sha256!r} is not 64 lowercase hex digits"
            )
        if inventory.files < 0 or inventory.bytes < 0:
            raise SbomError(where, f"component:{kit_component.id}", "a file count or size below 0")
        group = _group(kit_component.id, kit_component.role, kit_component.phase, kit_component.subject)
        group["hashes"] = [{"alg": "SHA-256", "content": inventory.sha256}]
        group["properties"] += [
            {"name": "kitbuilder:fileCount", "value": str(inventory.files)},
            {"name": "kitbuilder:size", "value": str(inventory.bytes)},
        ]
        groups[kit_component.id] = group
    return groups


def _attach_shipped(
    shipped: Sequence[ShippedSbom],
    groups: dict[str, _Json],
    containers: dict[str, _Json],
    shipped_sha256: Mapping[str, str],
    where: str,
) -> None:
    """A ``bom`` external reference for each shipped SBOM, on the image, repository or component it describes."""
    repositories: dict[str, _Json] = {}
    for ref, container in containers.items():
        repositories.setdefault(_split_ref(ref)[0], container)  # the first image of a repository
    for sbom in shipped:
        sha256 = shipped_sha256.get(sbom.path)
        if sha256 is None:
            raise SbomError(where, f"file:{sbom.path}", "a shipped SBOM must be one of the kit's files")
        if not _SHA256_HEX.fullmatch(sha256):
            raise SbomError(where, f"file:{sbom.path}", f"sha256 {sha256!r} is not 64 lowercase hex digits")
        target = (
            containers.get(sbom.subject)
            or repositories.get(sbom.subject)
            or groups.get(sbom.subject)
            or groups.get(sbom.component)
        )
        if target is None:
            raise SbomError(where, f"file:{sbom.path}", f"its component {sbom.component!r} is not a kit component")
        target.setdefault("externalReferences", []).append(
            {
                "type": "bom",
                "url": sbom.path,
                "comment": f"{sbom.format} {sbom.spec_version} SBOM of {sbom.subject}",
                "hashes": [{"alg": "SHA-256", "content": sha256}],
            }
        )


def _group(component_id: str, role: str, phase: str | None, subject: str | None) -> _Json:
    properties = [{"name": "kitbuilder:role", "value": role}]
    if phase is not None:
        properties.append({"name": "kitbuilder:phase", "value": phase})
    if subject is not None:
        properties.append({"name": "kitbuilder:subject", "value": subject})
    return {
        "bom-ref": f"component:{component_id}",
        "type": "application" if role in _APPLICATION_ROLES else "data",
        "name": component_id,
        "properties": properties,
    }


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``registry.local/a/b:1.2`` → (``registry.local/a/b``, ``1.2``); a ``:port`` is not a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, None


def _container(image: SbomImage, where: str) -> _Json:
    match = _OCI_DIGEST.fullmatch(image.digest)
    if match is None:
        raise SbomError(where, f"image:{image.ref}", f"digest {image.digest!r} is not sha256:<64 lowercase hex>")
    repository, tag = _split_ref(image.ref)
    first = repository.split("/", 1)[0]
    qualifiers: dict[str, str] = {}
    # Only a first segment that is a host (docker's rule) makes the repository a fetchable location.
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        qualifiers["repository_url"] = repository
    if tag is not None:
        qualifiers["tag"] = tag
    if len(image.platforms) == 1 and image.platforms[0].count("/") >= 1:
        qualifiers["arch"] = image.platforms[0].split("/")[1]
    from packageurl import PackageURL  # imported here: only builds that carry images need it

    purl = PackageURL(type="oci", name=repository.rsplit("/", 1)[-1], version=image.digest, qualifiers=qualifiers)
    properties = [
        {"name": "kitbuilder:ref", "value": image.ref},
        {"name": "kitbuilder:mediaType", "value": image.media_type},
        *({"name": "kitbuilder:platform", "value": platform} for platform in image.platforms),
        {"name": "kitbuilder:size", "value": str(image.size)},
    ]
    return {
        "bom-ref": f"image:{image.ref}",
        "type": "container",
        "name": repository,
        "version": tag if tag is not None else image.digest,
        "hashes": [{"alg": "SHA-256", "content": match.group(1)}],
        "purl": purl.to_string(),
        "properties": properties,
    }
