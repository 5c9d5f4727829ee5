"""The one reader of a kit's metadata members, wherever they live.

A kit's metadata (``SHA256SUMS``, ``SHA256SUMS.sig``, ``manifest.json``,
``manifest.dsse.json``, optional attestations and Sigstore bundle) is read
from three places: a kit file (through its index), a delta kit's
``delta/target/`` (the new kit's metadata, through the delta's index) and an
installed kit directory (files at its top). All three go through
``_assemble``: the same names, the same bounds, the same parsing and the same
path rules, so what ``kit verify``, ``kit patch`` on a file and ``kit patch``
on a directory accept cannot drift apart. Nothing here checks a signature;
``verify.check_signed_metadata`` does that on the result.

Kit files are opened once (``open_kit``) and that descriptor is used for
everything after: verify, then read, never re-open by name.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder import inputfile
from kitbuilder.archive import reader
from kitbuilder.archive.reader import Caps, IndexLocation
from kitbuilder.core import paths
from kitbuilder.core.dsse import Envelope
from kitbuilder.core.manifest import (
    ATTESTATIONS_DIR,
    MANIFEST_DSSE,
    MANIFEST_JSON,
    MAX_ATTESTATIONS,
    METADATA_FILES,
    SIGSTORE_BUNDLE,
    Manifest,
    MetadataBudget,
    metadata_names,
)
from kitbuilder.errors import ArchiveError, FormatError, HostIOError, IntegrityError, KitError, UsageError
from kitbuilder.ops import confined

TARGET_DIR = "delta/target"


@dataclass(frozen=True)
class Metadata:
    """The metadata members of a kit and the two documents parsed from them; nothing here is verified yet."""

    members: dict[str, bytes]
    envelope: Envelope
    manifest: Manifest


@dataclass(frozen=True)
class KitMetadata(Metadata):
    """Metadata read through a kit file's index, with where that index lies."""

    location: IndexLocation


def open_kit(path: Path) -> BinaryIO:
    """Open a kit file for reading; refuse what is not a regular file (a FIFO would hang, a directory is no kit)."""
    try:
        return inputfile.open_regular(path)
    except inputfile.NotRegularFile as exc:
        raise UsageError(f"{path}: cannot open kit ({exc.kind})") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENXIO):
            raise UsageError(f"{path}: cannot open kit ({exc.strerror})") from exc
        raise HostIOError.from_os_error(exc, path=path, action="open kit") from exc


def read_metadata(stream: BinaryIO, caps: Caps) -> KitMetadata:
    """A kit file's metadata members, read through its index (small, bounded reads)."""
    location = reader.read_index(stream, caps)
    index = location.index

    def missing(name: str) -> KitError:
        return ArchiveError(f"kit index has no {name}: not a complete kit")

    # Only the metadata members are located and read (inspect of a kit of many files reads nothing else).
    members, envelope, manifest = _assemble(
        index.sizes(),
        lambda name: reader.read_member(stream, index.locate(name), caps),
        caps,
        MetadataBudget(len(location.index.members), frames=len(location.index.frames)),
        source="kit index",
        what=lambda name: name,
        missing=missing,
    )
    if index.format_version == 2 and manifest.format_version == 2:
        # Where the payload ends is signed (the manifest's frames); the index must end it there too. Checked here,
        # for every reader of a kit file, on the manifest that check_signed_metadata then proves is the signed one.
        index.check_payload_split(len(manifest.frames), members)
    return KitMetadata(members=members, envelope=envelope, manifest=manifest, location=location)


def read_target_metadata(stream: BinaryIO, caps: Caps) -> Metadata:
    """The new kit's metadata a delta carries under ``delta/target/``, read through the delta's index."""
    index = reader.read_index(stream, caps).index
    prefix = f"{TARGET_DIR}/"
    sizes = {path[len(prefix) :]: size for path, size in index.sizes().items() if path.startswith(prefix)}

    def missing(name: str) -> KitError:
        return IntegrityError(f"delta kit lacks {TARGET_DIR}/{name}")

    members, envelope, manifest = _assemble(
        sizes,
        lambda name: reader.read_member(stream, index.locate(prefix + name), caps),
        caps,
        # The target's members are content of the delta its signature covers (verified before this is read), so
        # the budget is the largest kit the caps allow, not one derived from unsigned counts.
        MetadataBudget(caps.max_members),
        source=f"delta kit index ({prefix})",
        what=lambda name: prefix + name,
        missing=missing,
    )
    return Metadata(members=members, envelope=envelope, manifest=manifest)


def read_installed_metadata(directory: confined.Directory, caps: Caps) -> Metadata:
    """An installed kit's metadata files at the top of ``directory``; links and special files are refused."""

    def refuse(message: str) -> KitError:
        return UsageError(f"{message}; an installed kit's metadata must be regular files")

    def missing(name: str) -> KitError:
        return UsageError(f"{directory.shown}: not an installed kit ({name}: No such file or directory)")

    present = [name for name in (*METADATA_FILES, SIGSTORE_BUNDLE) if directory.kind(name) is not None]
    attestations = directory.open_subdir(ATTESTATIONS_DIR, refuse=refuse)
    if attestations is not None:
        with attestations:
            try:
                present += [f"{ATTESTATIONS_DIR}/{name}" for name in os.listdir(attestations.fd)]
            except OSError as exc:
                raise confined.host_error(exc, attestations.shown, "list") from exc
    sizes: dict[str, int] = {}
    fds: dict[str, int] = {}
    try:
        for name in metadata_names(present):
            if directory.kind(name) is None:
                continue
            fd = directory.open_regular(name, refuse=refuse)
            if fd is None:
                raise refuse(f"{directory.name(name)}: is not a regular file")
            fds[name] = fd
            sizes[name] = os.fstat(fd).st_size

        def read(name: str) -> bytes:
            return confined.read_bounded(
                fds[name], caps.max_metadata, what=directory.name(name), too_big=lambda m: ArchiveError(m)
            )

        # An installed directory lists no member count before its manifest is read: the caps' largest kit.
        members, envelope, manifest = _assemble(
            sizes,
            read,
            caps,
            MetadataBudget(caps.max_members),
            source=directory.shown,
            what=lambda name: directory.name(name),
            missing=missing,
        )
    finally:
        for fd in fds.values():
            os.close(fd)
    return Metadata(members=members, envelope=envelope, manifest=manifest)


def _assemble(
    sizes: Mapping[str, int],
    read: Callable[[str], bytes],
    caps: Caps,
    budget: MetadataBudget,
    *,
    source: str,
    what: Callable[[str], str],
    missing: Callable[[str], KitError],
) -> tuple[dict[str, bytes], Envelope, Manifest]:
    """The shared rules: which names, how many, how big, parsed how. ``sizes`` holds every name present."""
    names = metadata_names(sizes)
    attestations = [name for name in names if name.startswith(f"{ATTESTATIONS_DIR}/")]
    if len(attestations) > MAX_ATTESTATIONS:
        raise ArchiveError(f"{source} lists {len(attestations)} attestations; at most {MAX_ATTESTATIONS} are allowed")
    for name in names:
        if name not in sizes:
            raise missing(name)
        if sizes[name] > caps.max_metadata:
            raise ArchiveError(f"{what(name)}: {sizes[name]} bytes exceeds the metadata cap of {caps.max_metadata}")
        # Each required document may cost what it would in an honest kit of this many members
        # (docs/parse-limits.md): checked on sizes before anything is read, on structure before parsing.
        budget.check_size(name, sizes[name])
    # Optional members are unsigned: bound them together, from their sizes, before any is read.
    optional_bytes = sum(sizes[name] for name in names if name not in METADATA_FILES)
    if optional_bytes > caps.max_metadata:
        raise ArchiveError(
            f"{source} lists {optional_bytes} bytes of attestations and Sigstore bundle; "
            f"at most {caps.max_metadata} are allowed together"
        )
    members = {name: read(name) for name in names}
    envelope = Envelope.from_bytes(members[MANIFEST_DSSE], what=what(MANIFEST_DSSE))
    manifest = Manifest.from_bytes(members[MANIFEST_JSON], what=what(MANIFEST_JSON), limits=budget.manifest_limits())
    for path in (f.path for f in manifest.files):
        problem = paths.problem_with(path)
        if problem is not None:
            raise FormatError(f"{what(MANIFEST_JSON)}: file {path!r}: {problem}")
    return members, envelope, manifest


def check_layout(files: Iterable[str], metadata: Iterable[str], *, what: str) -> None:
    """The files a manifest lists and the metadata members can all exist at once on one filesystem.

    For writing a manifest's files somewhere other than through a verified archive (an
    installed directory): no two names that collide up to case or Unicode form, no file
    that another needs as a directory. FormatError naming the first that cannot.
    """
    seen: dict[str, str] = {}
    for path in (*metadata, *files):
        clash = paths.claim(path, seen)
        if clash is not None:
            raise FormatError(f"{what}: file {path!r}: {clash}")


class SameFileReader:
    """Another read position on an already open kit file, for reading members side by side.

    Reads with ``os.pread`` on the caller's descriptor: the same file that was
    verified, never re-opened by name (a file renamed over the path meanwhile is
    not seen), and no shared offset between readers. Close it; the descriptor
    stays the caller's.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._fd = stream.fileno()
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self._fd).st_size - self._offset)
        data = os.pread(self._fd, size, self._offset)
        self._offset += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._offset = offset
        elif whence == os.SEEK_CUR:
            self._offset += offset
        else:
            self._offset = os.fstat(self._fd).st_size + offset
        return self._offset

    def tell(self) -> int:
        return self._offset

    def close(self) -> None:
        self._fd = -1

    def __enter__(self) -> SameFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
