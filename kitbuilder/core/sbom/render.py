"""The kit's own SBOM: ``render_kit_sbom`` writes ``sbom/kit.cdx.json`` in CycloneDX 1.6.

The kit is ``metadata.component``; each kit component is a component with its files nested in it; container
images carry their manifest digests and an ``oci`` purl; shipped SBOMs are ``bom`` external references on
what they describe. The bytes depend only on the inputs, so rebuilds stay identical, and the document is
checked against the 1.6 schema (``cyclonedx``) before it is written.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.core.sbom.cyclonedx import validate_cyclonedx
from kitbuilder.core.sbom.model import (
    KIT_SBOM_PATH,
    KIT_SPEC_VERSION,
    KitComponent,
    SbomError,
    SbomFile,
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
    files: Sequence[SbomFile],
    images: Sequence[SbomImage],
    shipped: Sequence[ShippedSbom],
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of a kit, checked against the 1.6 schema; identical inputs, identical bytes.

    ``created`` (RFC 3339 UTC, from SOURCE_DATE_EPOCH) becomes ``metadata.timestamp``; without it there is
    none. A file at ``KIT_SBOM_PATH`` is left out (the SBOM cannot hold its own digest). Raises SbomError when
    the inputs do not make a valid SBOM (a malformed digest, a shipped SBOM that is not among the files, two
    components with one bom-ref).
    """
    where = KIT_SBOM_PATH
    groups, by_path = _groups(components, files, where)
    containers: dict[str, _Json] = {}
    for image in images:
        if image.ref in containers:
            raise SbomError(where, f"image:{image.ref}", "two images have this ref")
        containers[image.ref] = _container(image, where)
    _attach_shipped(shipped, groups, containers, by_path, where)
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


def _groups(
    components: Sequence[KitComponent], files: Sequence[SbomFile], where: str
) -> tuple[dict[str, _Json], dict[str, SbomFile]]:
    """One component per kit component (id → component) with its files nested in it; the files by path."""
    groups: dict[str, _Json] = {}
    group_roles: dict[str, str] = {}
    for kit_component in components:
        if kit_component.id in groups:
            raise SbomError(where, f"component:{kit_component.id}", "two kit components have this id")
        groups[kit_component.id] = _group(
            kit_component.id, kit_component.role, kit_component.phase, kit_component.subject
        )
        group_roles[kit_component.id] = kit_component.role
    by_path: dict[str, SbomFile] = {}
    for file in sorted(files, key=lambda f: f.path):
        if file.path == KIT_SBOM_PATH:
            continue
        if not _SHA256_HEX.fullmatch(file.sha256):
            raise SbomError(where, f"file:{file.path}", f"sha256 {file.sha256!r} is not 64 lowercase hex digits")
        if file.component not in groups:
            # Files of a component the caller did not list (e.g. the OCI layout under images/) still get a group.
            groups[file.component] = _group(file.component, file.role, None, None)
            group_roles[file.component] = file.role
        entry: _Json = {
            "bom-ref": f"file:{file.path}",
            "type": "file",
            "name": file.path,
            "hashes": [{"alg": "SHA-256", "content": file.sha256}],
            "properties": [{"name": "kitbuilder:size", "value": str(file.size)}],
        }
        if file.role != group_roles[file.component]:
            entry["properties"].append({"name": "kitbuilder:role", "value": file.role})
        groups[file.component].setdefault("components", []).append(entry)
        by_path[file.path] = file
    return groups, by_path


def _attach_shipped(
    shipped: Sequence[ShippedSbom],
    groups: dict[str, _Json],
    containers: dict[str, _Json],
    by_path: dict[str, SbomFile],
    where: str,
) -> None:
    """A ``bom`` external reference for each shipped SBOM, on the image, repository or component it describes."""
    repositories: dict[str, _Json] = {}
    for ref, container in containers.items():
        repositories.setdefault(_split_ref(ref)[0], container)  # the first image of a repository
    for sbom in shipped:
        sbom_file = by_path.get(sbom.path)
        if sbom_file is None:
            raise SbomError(where, f"file:{sbom.path}", "a shipped SBOM must be one of the kit's files")
        target = (
            containers.get(sbom.subject)
            or repositories.get(sbom.subject)
            or groups.get(sbom.subject)
            or groups.get(sbom.component)
            or groups.setdefault(sbom.component, _group(sbom.component, "sbom", None, sbom.subject))
        )
        target.setdefault("externalReferences", []).append(
            {
                "type": "bom",
                "url": sbom.path,
                "comment": f"{sbom.format} {sbom.spec_version} SBOM of {sbom.subject}",
                "hashes": [{"alg": "SHA-256", "content": sbom_file.sha256}],
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
