"""The build side: read a spec's image sources, check them, and plan the kit's images/ tree.

The plan is one OCI image layout: ``images/oci-layout``, ``images/index.json``
(one entry per spec image, in spec order, named by its
``org.opencontainers.image.ref.name``) and ``images/blobs/sha256/<hex>``, each
blob stored once however many images share it. Manifests, indexes and configs
are read and checked while planning; every other blob is checked while the
build reads it (``PlannedMember.open``), in the one read the build makes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.core import jsonio
from kitbuilder.core.images import ImageRecord
from kitbuilder.core.spec import ImageSpec
from kitbuilder.errors import IntegrityError, SpecError, UsageError
from kitbuilder.oci import layout
from kitbuilder.oci.layout import Descriptor
from kitbuilder.oci.sources import Source, open_source

IMAGES_DIR = "images"
# ustar's 12-byte octal size field: a kit member (so a blob) stays below 8 GiB.
MAX_BLOB = 8**11 - 1
# Blobs at least this big are hashed on a worker thread while the build compresses them.
_THREADED_HASH_MIN = 4 << 20


@dataclass(frozen=True)
class PlannedMember:
    """One file of the kit's images/ tree; ``open`` yields exactly ``size`` bytes, checked as they are read."""

    kit_path: str
    size: int
    sha256: str
    open: Callable[[], AbstractContextManager[BinaryIO]]
    # The same bytes unchecked, for a caller that hashes them itself in its single read (kit build's
    # writer does, and compares with ``sha256`` before the kit is complete); ``label`` names the source.
    open_raw: Callable[[], AbstractContextManager[BinaryIO]] | None = None
    label: str = ""


@dataclass(frozen=True)
class ImagePlan:
    members: tuple[PlannedMember, ...]
    images: tuple[ImageRecord, ...]

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)


class _Bounded:
    """At most ``size`` bytes of ``raw`` (a blob inside an archive is a slice of a larger stream)."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw = raw
        self._left = size

    def read(self, size: int | None = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        return data


class CheckedReader:
    """Reads exactly ``size`` bytes of ``raw``, hashing them; IntegrityError at the end if the digest differs.

    The check runs in the read that returns the last byte, so a consumer that reads
    ``size`` bytes has its answer before it can treat the data as complete.
    """

    def __init__(self, raw: BinaryIO, size: int, sha256: str, label: str, *, worker: HashWorker | None = None) -> None:
        self._raw = raw
        self._left = size
        self._size = size
        self._sha256 = sha256
        self._label = label
        # With a worker the hashing runs on another core, beside the build's compression and its own digests.
        self._worker = worker
        self._digest: Any = QueuedDigest(worker, hashlib.sha256()) if worker is not None else hashlib.sha256()
        self._checked = False

    def read(self, size: int | None = -1) -> bytes:
        if self._left == 0:
            self._finish()
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(want)
        if not data:
            raise IntegrityError(
                f"{self._label}: source ended after {self._size - self._left} of {self._size} bytes; rerun the build"
            )
        self._digest.update(data)
        self._left -= len(data)
        if self._left == 0:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._checked:
            return
        if self._worker is not None:
            self._digest.flush()
            self._worker.sync()
        observed = self._digest.hexdigest()
        if observed != self._sha256:
            raise IntegrityError(f"{self._label}: content has sha256:{observed}, not its digest sha256:{self._sha256}")
        self._checked = True


def plan_images(images: Sequence[ImageSpec], *, spec_path: Path) -> ImagePlan:
    """Read and check every image source; return the kit members and the per-image records.

    SpecError (2) for what the spec asks that the source cannot give (an image
    not found by sourceRef, a platform filter matching nothing, a multi-image
    source without sourceRef); IntegrityError (4) for a blob that is missing, has
    the wrong size or the wrong content; FormatError (5) for malformed OCI JSON.
    """
    if not images:
        return ImagePlan(members=(), images=())
    sources: dict[tuple[Path, str], Source] = {}
    documents: dict[str, bytes] = {}  # JSON blobs read (and checked) while planning, kept for the build
    blobs: dict[str, tuple[Source, Descriptor, str]] = {}
    records: list[ImageRecord] = []
    entries: list[dict[str, object]] = []
    for number, image in enumerate(images):
        where = image.where(spec_path, number)
        key = (image.source, image.format)
        if key not in sources:
            sources[key] = open_source(image.source, image.format, where)
        source = sources[key]
        fetch = _fetcher(source, documents)
        root = source.select(image.source_ref, where)
        if image.platform is not None:
            root = _pick_platform(root, image.platform, fetch, where, source)
        label = f"{source.path}: {root.digest}"
        tree = layout.walk_image(root, fetch, what=label)
        for digest, descriptor in tree.blobs.items():
            if digest not in blobs:
                blobs[digest] = (source, descriptor, f"{source.path}: blob {digest}")
                _check_present(source, descriptor)
            elif blobs[digest][1].size != descriptor.size:
                raise IntegrityError(
                    f"{source.path}: blob {digest}: descriptor size {descriptor.size} differs from "
                    f"{blobs[digest][1].size} given for the same blob by {blobs[digest][0].path}"
                )
        records.append(
            ImageRecord(
                ref=image.ref,
                digest=root.digest,
                media_type=root.media_type,
                platforms=tree.platforms,
                size=tree.size,
                layers=len(tree.layers),
            )
        )
        entries.append(
            Descriptor(root.media_type, root.digest, root.size, root.platform).to_json(
                annotations={layout.REF_NAME: image.ref}
            )
        )
    members = [
        _memory_member(f"{IMAGES_DIR}/{layout.OCI_LAYOUT_FILE}", jsonio.dump_pretty({"imageLayoutVersion": "1.0.0"})),
        _memory_member(
            f"{IMAGES_DIR}/{layout.INDEX_FILE}",
            jsonio.dump_pretty({"schemaVersion": 2, "mediaType": layout.OCI_INDEX, "manifests": entries}),
        ),
    ]
    for digest, (source, descriptor, label) in blobs.items():
        kit_path = f"{IMAGES_DIR}/{layout.blob_path(digest)}"
        if digest in documents:
            members.append(_memory_member(kit_path, documents[digest]))
        else:
            members.append(_source_member(kit_path, source, descriptor, label))
    members.sort(key=lambda m: m.kit_path)
    return ImagePlan(members=tuple(members), images=tuple(records))


def _fetcher(source: Source, documents: dict[str, bytes]) -> layout.Fetch:
    def fetch(descriptor: Descriptor, what: str) -> bytes:
        if descriptor.digest not in documents:
            documents[descriptor.digest] = source.read_blob(descriptor, what)
        return documents[descriptor.digest]

    return fetch


def _check_present(source: Source, descriptor: Descriptor) -> None:
    size = source.blob_size(descriptor.digest)
    if size is None:
        raise IntegrityError(
            f"{source.path}: blob {descriptor.digest} ({descriptor.media_type}) is referenced but missing"
        )
    if size != descriptor.size:
        raise IntegrityError(
            f"{source.path}: blob {descriptor.digest} has {size} bytes, its descriptor says {descriptor.size}"
        )
    if size > MAX_BLOB:
        raise UsageError(f"{source.path}: blob {descriptor.digest} has {size} bytes; kit members stay below 8 GiB")


def _pick_platform(root: Descriptor, wanted: str, fetch: layout.Fetch, where: str, source: Source) -> Descriptor:
    candidates = layout.platform_candidates(root, fetch, what=f"{source.path}: {root.digest}")
    matches = [d for d, platform in candidates if layout.platform_matches(platform, wanted)]
    exact = [d for d, platform in candidates if platform == wanted]
    if len(exact) == 1:
        matches = exact
    available = ", ".join(sorted({p for _, p in candidates if p is not None})) or "none recorded"
    if not matches:
        raise SpecError(f"{where}.platform: {wanted} matches nothing in {source.path} (platforms: {available})")
    if len({d.digest for d in matches}) > 1:
        raise SpecError(f"{where}.platform: {wanted} matches several manifests in {source.path} ({available})")
    chosen = matches[0]
    platform = next(p for d, p in candidates if d.digest == chosen.digest)
    return Descriptor(chosen.media_type, chosen.digest, chosen.size, platform if root is not chosen else None)


def _memory_member(kit_path: str, data: bytes) -> PlannedMember:
    sha256 = hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield CheckedReader(io.BytesIO(data), len(data), sha256, kit_path)  # type: ignore[misc]

    @contextlib.contextmanager
    def raw_opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    return PlannedMember(
        kit_path=kit_path, size=len(data), sha256=sha256, open=opener, open_raw=raw_opener, label=kit_path
    )


def _source_member(kit_path: str, source: Source, descriptor: Descriptor, label: str) -> PlannedMember:
    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        worker = HashWorker() if descriptor.size >= _THREADED_HASH_MIN else None
        try:
            with source.open_blob(descriptor.digest) as raw:
                yield CheckedReader(raw, descriptor.size, descriptor.hex, label, worker=worker)  # type: ignore[misc]
        finally:
            if worker is not None:
                worker.close()

    @contextlib.contextmanager
    def raw_opener() -> Iterator[BinaryIO]:
        with source.open_blob(descriptor.digest) as raw:
            yield _Bounded(raw, descriptor.size)  # type: ignore[misc]

    return PlannedMember(
        kit_path=kit_path, size=descriptor.size, sha256=descriptor.hex, open=opener, open_raw=raw_opener, label=label
    )
