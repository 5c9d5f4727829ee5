"""A kit component's inventory: what the kit SBOM and the provenance say about a component's files.

Neither lists the files: ``SHA256SUMS`` and the signed manifest already do, and repeating a million paths in
two more signed documents is what made large kits exceed the metadata cap. Instead each component carries its
file count, its total bytes and one digest that ties it to those files: the SHA-256 of the component's lines
of ``SHA256SUMS``, in the order ``SHA256SUMS`` has them (sorted by path), each line with its newline. Stock
tools recompute it (docs/sbom.md, "Checking with stock tools"); ``component_inventories`` is the one place kit
computes it, for ``kit build`` and for the checks that read it back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from operator import attrgetter
from typing import Any, Protocol

from kitbuilder.core.filelist import FileTable, path_order
from kitbuilder.core.manifest import KIT_SBOM_COMPONENT
from kitbuilder.core.sbom.model import KIT_SBOM_PATH, Inventory
from kitbuilder.core.sbom.summary import listed_files


class InventoryFile(Protocol):
    """What an inventory reads of a file: a manifest ``FileEntry`` or a ``SbomFile`` both have it."""

    @property
    def path(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def component(self) -> str: ...


def component_inventories(files: Iterable[InventoryFile]) -> dict[str, Inventory]:
    """Component id → Inventory of ``files``, leaving out ``sbom/kit.cdx.json`` (the SBOM cannot describe itself).

    Each line is hashed as ``checksums.render`` writes it (``<sha256>  <path>\n``), in path order, so the digest
    is that of the lines a ``grep`` of the component's paths in ``SHA256SUMS`` prints. Components without files
    are not in the result; their inventory is ``Inventory()``. Memory is one hasher per component, whatever the
    number of files.
    """
    hashers: dict[str, hashlib._Hash] = {}
    counts: dict[str, list[int]] = {}

    def add(path: str, sha256: str, size: int, component: str) -> None:
        if path == KIT_SBOM_PATH:
            return
        hasher = hashers.get(component)
        if hasher is None:
            hasher = hashers[component] = hashlib.sha256()
            counts[component] = [0, 0]
        # The line exactly as checksums.render writes it (tests hold the two together); formatted here, since a
        # render call per line is a third of a build's metadata time at a million files.
        hasher.update(f"{sha256}  {path}\n".encode())
        tally = counts[component]
        tally[0] += 1
        tally[1] += size

    # Sorted like SHA256SUMS. A FileTable (a build's, a kit's list) is walked by position in path order: an entry
    # object per file sorted as a list would be ~300 bytes a file held at once (a build's peak at a million files).
    if isinstance(files, FileTable):
        for number in path_order(files.paths):
            add(files.paths[number], files.sha256(number), files.size(number), files.component(number))
    else:
        for file in sorted(files, key=attrgetter("path")):
            add(file.path, file.sha256, file.size, file.component)
    return {
        component: Inventory(files=counts[component][0], bytes=counts[component][1], sha256=hasher.hexdigest())
        for component, hasher in hashers.items()
    }


_COUNT = re.compile(r"0|[1-9][0-9]{0,18}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_GROUP_PREFIX = "component:"


def stated_inventories(document: Mapping[str, Any]) -> dict[str, Inventory | None]:
    """Component id → the inventory a (validated) kit SBOM states for it; None where it states none or a bad one.

    Read from each top-level component whose bom-ref is ``component:<id>``: its one SHA-256 hash and its
    ``kitbuilder:fileCount`` and ``kitbuilder:size`` properties, each stated once, in decimal.
    """
    stated: dict[str, Inventory | None] = {}
    components = document.get("components")
    for component in components if isinstance(components, list) else []:
        ref = component.get("bom-ref") if isinstance(component, dict) else None
        if not isinstance(ref, str) or not ref.startswith(_GROUP_PREFIX):
            continue
        component_id = ref[len(_GROUP_PREFIX) :]
        # A second group for one id is a forgery (render refuses it): no inventory can be read for that id.
        stated[component_id] = None if component_id in stated else _stated(component)
    return stated


def _stated(component: Mapping[str, Any]) -> Inventory | None:
    hashes = component.get("hashes")
    if not isinstance(hashes, list) or len(hashes) != 1 or not isinstance(hashes[0], dict):
        return None
    if hashes[0].get("alg") != "SHA-256" or not isinstance(digest := hashes[0].get("content"), str):
        return None
    values: dict[str, list[object]] = {}
    properties = component.get("properties")
    for item in properties if isinstance(properties, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            values.setdefault(item["name"], []).append(item.get("value"))
    numbers = [values.get(name, []) for name in ("kitbuilder:fileCount", "kitbuilder:size")]
    counted = [n[0] for n in numbers if len(n) == 1 and isinstance(n[0], str) and _COUNT.fullmatch(n[0])]
    if len(counted) != 2 or not _SHA256_HEX.fullmatch(digest):
        return None
    return Inventory(files=int(counted[0]), bytes=int(counted[1]), sha256=digest)


def kit_sbom_matches(document: dict[str, Any], components: Iterable[str], files: Iterable[InventoryFile]) -> bool:
    """Whether a (validated) kit SBOM describes exactly the signed manifest's components and ``files``.

    ``components`` are the ids the manifest declares. The SBOM must have one group for each (``kit-sbom``, which
    holds only the SBOM itself, aside) and no other, each stating the count, bytes and digest recomputed from
    ``files``. A kit SBOM written before inventories (one ``file`` component per file) must list exactly the
    files, with their digests, instead.
    """
    files = list(files)
    if any(c.get("type") == "file" for c in _nested(document)):
        return listed_files(document) == {f.path: f.sha256 for f in files if f.path != KIT_SBOM_PATH}
    stated = stated_inventories(document)
    actual = component_inventories(files)
    expected_ids = {c for c in components if c != KIT_SBOM_COMPONENT} | set(actual)
    if set(stated) != expected_ids:
        return False
    return all(stated[c] == actual.get(c, Inventory()) for c in expected_ids)


def _nested(document: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The components one level below the top (where a kit SBOM before inventories nests its files)."""
    components = document.get("components")
    for component in components if isinstance(components, list) else []:
        nested = component.get("components") if isinstance(component, dict) else None
        yield from (c for c in (nested if isinstance(nested, list) else []) if isinstance(c, dict))
