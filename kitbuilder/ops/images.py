"""Getting images out of a kit: ``kit images export`` (an OCI layout on disk) and ``kit images push`` (a registry).

Both verify the whole kit first (``verify_kit``), then read the images/ members
again through the index. The file could change between the two reads, so
every byte is hashed again while it streams and compared with the signed
digest before anything is committed: the rename into the output directory, or
the PUT that completes a blob upload.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder import faults
from kitbuilder.archive import reader
from kitbuilder.archive.index import IndexEntry, MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.atomic import TempPattern, clear_stale, fsync_path, os_error, scratch_dir
from kitbuilder.core.images import ImageRecord
from kitbuilder.core.manifest import Manifest
from kitbuilder.errors import IntegrityError, UsageError
from kitbuilder.oci import layout
from kitbuilder.oci.check import PREFIX, CheckedLayout, walk_layout
from kitbuilder.oci.reference import parse_registry, push_target
from kitbuilder.oci.registry import RegistryClient, TransferOptions
from kitbuilder.ops.kitfile import SameFileReader, located_index
from kitbuilder.ops.verify import VerifyOptions, open_kit, same_as_signed, verify_kit

EXPORT_TEMP_PREFIX = ".kit-export-tmp-"
# Export's scratch directories in OUT_DIR: .kit-export-tmp-<pid>-<random> (see kitbuilder.atomic).
EXPORT_TEMP = TempPattern(EXPORT_TEMP_PREFIX, "")


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    images: tuple[ImageRecord, ...]
    blobs: int
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {
            "outDir": str(self.out_dir),
            "images": [image.to_json() for image in self.images],
            "blobs": self.blobs,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ImagePush:
    ref: str
    pushed_as: str
    digest: str
    blobs_sent: int
    blobs_skipped: int
    blobs_mounted: int
    bytes_sent: int

    def to_json(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "pushedAs": self.pushed_as,
            "digest": self.digest,
            "blobsSent": self.blobs_sent,
            "blobsSkipped": self.blobs_skipped,
            "blobsMounted": self.blobs_mounted,
            "bytesSent": self.bytes_sent,
        }


@dataclass(frozen=True)
class PushResult:
    kit: Path
    registry: str
    images: tuple[ImagePush, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "kit": str(self.kit),
            "registry": self.registry,
            "images": [image.to_json() for image in self.images],
            "blobsSent": sum(i.blobs_sent for i in self.images),
            "blobsSkipped": sum(i.blobs_skipped for i in self.images),
            "blobsMounted": sum(i.blobs_mounted for i in self.images),
            "bytesSent": sum(i.bytes_sent for i in self.images),
        }


class _KitImages:
    """The images/ members of a verified kit, read again through its index and checked against the signed manifest."""

    def __init__(self, kit: Path, manifest: Manifest, stream: BinaryIO, caps: Caps) -> None:
        self.kit = kit
        self.caps = caps
        self.stream = stream
        self.signed = {f.path: f for f in manifest.files if f.path.startswith(PREFIX)}
        # Format 2: payload members are located from the kit's file list (checked against the signed manifest below).
        index = located_index(stream, caps).by_path()
        self.entries: dict[str, IndexEntry | MemberSpan] = {}
        for path, item in self.signed.items():
            entry = index.get(path)
            if entry is None or not same_as_signed(entry, item, manifest):
                raise IntegrityError(f"{kit}: {path}: the kit changed after it was verified; verify it again")
            self.entries[path] = entry

    def sizes(self) -> dict[str, tuple[int, str]]:
        return {path: (item.size, item.sha256) for path, item in self.signed.items()}

    def read_small(self, path: str) -> bytes:
        return reader.read_member(self.stream, self.entries[path], self.caps)

    @contextlib.contextmanager
    def chunks(self, path: str) -> Iterator[Iterator[bytes]]:
        """The member's content in pieces; raises IntegrityError before the last piece if it is not what was signed.

        Each call has its own read position on the one verified descriptor, so uploads can run side by side.
        """
        with SameFileReader(self.stream) as stream:
            yield _member_chunks(stream, self.entries[path], self.caps, f"{self.kit}: {path}")  # type: ignore[arg-type]


def _member_chunks(stream: BinaryIO, entry: IndexEntry | MemberSpan, caps: Caps, label: str) -> Iterator[bytes]:
    """One member's content through the kit's one member reader: every check done before the last piece."""
    return reader.member_chunks(stream, entry, caps, against="signed", label=label)


def _records(kit: Path, manifest: Manifest) -> tuple[ImageRecord, ...]:
    if not manifest.images:
        raise UsageError(f"{kit}: the kit carries no container images")
    return manifest.images


def _check(images: _KitImages, manifest: Manifest) -> CheckedLayout:
    return walk_layout(images.sizes(), images.read_small, records=manifest.images)


def export_images(
    kit: Path, out_dir: Path, options: VerifyOptions, *, on_bytes: Callable[[int], None] | None = None
) -> ExportResult:
    """Verify the kit, then write its images as a plain OCI image layout in ``out_dir`` (new or empty).

    Written under ``out_dir/.kit-export-tmp-<pid>-<random>`` (a directory kit creates and
    locks) and renamed into place (index.json last), so ``out_dir`` never holds a layout
    whose index names blobs that are not there. HostIOError (exit 12) when the host
    refuses a write, naming the file; UsageError (2) for an unusable ``out_dir``.
    """
    _prepare_empty(out_dir)
    with open_kit(kit) as stream, scratch_dir(out_dir, EXPORT_TEMP, what=out_dir) as temp:
        # Verify, then read the images from the same descriptor: a kit renamed over the path is never used.
        report = verify_kit(kit, options, stream=stream)
        records = _records(kit, report.manifest)
        total = 0
        images = _KitImages(kit, report.manifest, stream, options.caps)
        for path, entry in sorted(images.entries.items()):
            relative = path[len(PREFIX) :].split("/")
            destination = temp.joinpath(*relative)
            try:
                # Inside the directory kit just created: nothing here was planted.
                destination.parent.mkdir(parents=True, exist_ok=True)
                observed = reader.read_member_to(stream, entry, options.caps, destination)
                fsync_path(destination)
            except OSError as exc:
                raise os_error(exc, out_dir.joinpath(*relative)) from exc
            if observed != images.signed[path].sha256:
                raise IntegrityError(f"{kit}: {path}: content changed after verify (sha256 {observed})")
            total += entry.size
            if on_bytes is not None:
                on_bytes(entry.size)
        checked = _check(images, report.manifest)
        faults.point("export-before-rename")
        try:
            for directory in (temp / "blobs" / "sha256", temp / "blobs", temp):
                if directory.exists():
                    fsync_path(directory)
        except OSError as exc:
            raise os_error(exc, out_dir) from exc
        for name in ("blobs", layout.OCI_LAYOUT_FILE, layout.INDEX_FILE):
            if (temp / name).exists():
                try:
                    _move_into(temp / name, out_dir / name)
                except OSError as exc:
                    raise os_error(exc, out_dir / name) from exc
        try:
            fsync_path(out_dir)
        except OSError as exc:
            raise os_error(exc, out_dir) from exc
    return ExportResult(out_dir=out_dir, images=records, blobs=checked.summary.blob_count, bytes=total)


def _move_into(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, which must not exist (out_dir was empty; nothing may have appeared)."""
    try:
        target.lstat()
    except FileNotFoundError:
        os.replace(source, target)
        return
    raise UsageError(f"{target}: appeared while the export ran (another export into {target.parent}?); rerun")


def _prepare_empty(out_dir: Path) -> None:
    """Make sure ``out_dir`` exists and is empty but for leftovers of killed exports (cleared)."""
    try:
        out_dir.mkdir()
        return
    except FileExistsError:
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir}: exists and is not a directory") from None
    except FileNotFoundError:
        raise UsageError(
            f"{out_dir}: cannot create it: directory {out_dir.parent} does not exist; create it or choose another path"
        ) from None
    except OSError as exc:
        raise os_error(exc, out_dir, action="create") from exc
    kept = clear_stale(out_dir, EXPORT_TEMP, is_dir=True)
    for entry in kept:
        if entry.live:
            raise UsageError(f"{out_dir}: another kit images export is writing into it; wait for it to finish")
        raise UsageError(
            f"{entry.path}: not a directory an earlier export left (a symbolic link, or another user's); "
            "remove it and rerun"
        )
    try:
        others = sorted(os.listdir(out_dir))
    except OSError as exc:
        raise os_error(exc, out_dir, action="list") from exc
    if others:
        raise UsageError(f"{out_dir}: not empty; export writes a fresh OCI layout into a new or empty directory")


def push_images(
    kit: Path,
    registry: str,
    options: VerifyOptions,
    *,
    tls_verify: bool = True,
    ca_cert: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    refs: Sequence[str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    transfer: TransferOptions | None = None,
) -> PushResult:
    """Verify the kit, then push its images (or those named in ``refs``) to ``registry`` (HOST[:PORT]).

    Each image goes to its reference with the registry host replaced, e.g.
    registry.local/team/app:1 → HOST:PORT/team/app:1. Blobs the registry has are
    skipped, blobs pushed earlier in this run to another repository are mounted,
    manifests go up by digest (children before an index) and then by tag.
    RegistryError (11) when the registry fails; rerunning finishes the job.
    """
    host = parse_registry(registry)
    results: list[ImagePush] = []
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(
            RegistryClient(
                host, tls_verify=tls_verify, ca_cert=ca_cert, username=username, password=password, options=transfer
            )
        )
        # Reach the registry and check the credentials first: a typo fails before a gigabyte is verified.
        client.ping()
        stream = stack.enter_context(open_kit(kit))
        report = verify_kit(kit, options, stream=stream)
        records = _records(kit, report.manifest)
        known = [r.ref for r in records]
        if refs:
            unknown = [r for r in refs if r not in known]
            if unknown:
                raise UsageError(f"{kit}: has no image {unknown[0]!r} (it has: {', '.join(known)})")
            records = tuple(r for r in records if r.ref in refs)
        images = _KitImages(kit, report.manifest, stream, options.caps)
        checked = _check(images, report.manifest)
        if on_start is not None:
            wanted: dict[str, int] = {}
            for record in records:
                wanted.update({d: b.size for d, b in checked.trees[record.ref].blobs.items()})
            on_start(sum(wanted.values()))
        landed: dict[str, str] = {}  # digest → a repository known to hold it in this run
        for record in records:
            results.append(_push_one(client, images, checked, record.ref, host, landed, on_bytes))
    return PushResult(kit=kit, registry=host, images=tuple(results))


def _push_one(
    client: RegistryClient,
    images: _KitImages,
    checked: CheckedLayout,
    ref: str,
    host: str,
    landed: dict[str, str],
    on_bytes: Callable[[int], None] | None,
) -> ImagePush:
    tree = checked.trees[ref]
    repository, tag = push_target(ref, host)
    manifest_digests = {descriptor.digest for descriptor, _ in tree.manifests}
    blobs = [(digest, blob) for digest, blob in tree.blobs.items() if digest not in manifest_digests]

    def push_blob(digest: str, size: int) -> tuple[str, int]:
        if landed.get(digest) == repository or client.blob_exists(repository, digest):
            outcome = "skipped"
        elif digest in landed and client.mount_blob(repository, digest, landed[digest]):
            outcome = "mounted"
        else:
            opener = functools.partial(images.chunks, checked.blob_paths[digest])
            return "sent", client.upload_blob(repository, digest, size, opener, on_bytes=on_bytes)
        if on_bytes is not None:
            on_bytes(size)
        return outcome, 0

    counts = {"sent": 0, "skipped": 0, "mounted": 0}
    sent_bytes = 0
    # A few blobs at a time: the registry hashes and stores one while the next is read from the kit and sent.
    with ThreadPoolExecutor(max_workers=client.options.parallel, thread_name_prefix="kit-push") as pool:
        futures = [(digest, pool.submit(push_blob, digest, blob.size)) for digest, blob in blobs]
        try:
            for digest, future in futures:
                outcome, sent = future.result()
                counts[outcome] += 1
                sent_bytes += sent
                landed.setdefault(digest, repository)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for descriptor, data in tree.manifests:
        client.put_manifest(repository, descriptor.digest, descriptor.media_type, data, descriptor.digest)
        if on_bytes is not None:
            on_bytes(descriptor.size)
    root = tree.root
    root_data = dict((d.digest, data) for d, data in tree.manifests)[root.digest]
    client.put_manifest(repository, tag, root.media_type, root_data, root.digest)
    return ImagePush(
        ref=ref,
        pushed_as=f"{host}/{repository}:{tag}",
        digest=root.digest,
        blobs_sent=counts["sent"],
        blobs_skipped=counts["skipped"],
        blobs_mounted=counts["mounted"],
        bytes_sent=sent_bytes,
    )
