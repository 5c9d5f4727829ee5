"""The one reader of a kit's metadata members, wherever they live.

A kit's metadata (``SHA256SUMS``, ``SHA256SUMS.sig``, format 2's signed file
list ``manifest.files.jsonl``, ``manifest.json``, ``manifest.dsse.json``,
optional attestations and Sigstore bundle) is read
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

import dataclasses
import errno
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kitbuilder import inputfile
from kitbuilder.archive import reader
from kitbuilder.archive.index import KitIndex
from kitbuilder.archive.reader import Caps, IndexLocation
from kitbuilder.core import checksums, filelist, paths
from kitbuilder.core.dsse import Envelope
from kitbuilder.core.filelist import FILE_LIST, FileListRef
from kitbuilder.core.manifest import (
    ATTESTATIONS_DIR,
    MANIFEST_DSSE,
    MANIFEST_JSON,
    MAX_ATTESTATIONS,
    METADATA_FILES,
    SHA256SUMS,
    SIGSTORE_BUNDLE,
    Manifest,
    MetadataBudget,
    metadata_names,
)
from kitbuilder.core.manifest_parts import check_component_payloads
from kitbuilder.errors import ArchiveError, FormatError, HostIOError, IntegrityError, KitError, UsageError
from kitbuilder.ops import confined

TARGET_DIR = "delta/target"
_PIECE = 1 << 20


@dataclass
class Metadata:
    """The metadata members of a kit and the two documents parsed from them; nothing here is verified yet.

    Format 2: the file list (``manifest.files.jsonl``) may still be unread (``files_pending``): then
    ``manifest.files`` is empty until ``load_files`` reads the list, checks it against the manifest's
    ``fileList`` and SHA256SUMS and fills ``manifest``, ``members`` (and a kit file's ``location``) in
    place. ``kit verify`` reads it only after the signatures (``check_signed_metadata`` calls it).
    """

    members: dict[str, bytes]
    envelope: Envelope
    manifest: Manifest
    # Format 2, until the list is read: its bytes in pieces, in order (a list of many files is never held whole).
    read_file_list: Callable[[], Iterator[bytes]] | None = None
    file_list_name: str = FILE_LIST  # how errors name it (a delta's target: delta/target/manifest.files.jsonl)
    # Whether ``load_files`` keeps the list's bytes in ``members`` (a delta's target and an installed directory,
    # whose list is written out again); a kit file's list is parsed as it is read and not kept.
    keep_file_list: bool = False

    @property
    def files_pending(self) -> bool:
        return self.read_file_list is not None


@dataclass
class KitMetadata(Metadata):
    """Metadata read through a kit file's index, with where that index lies (format 2: the index as read, frames
    and metadata members, until ``load_files`` replaces it by the full index with the payload members)."""

    location: IndexLocation = field(kw_only=True)


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


def read_metadata(
    stream: BinaryIO, caps: Caps, *, defer_files: bool = False, unread: frozenset[str] = frozenset()
) -> KitMetadata:
    """A kit file's metadata members, read through its index (small, bounded reads).

    Format 2: the signed file list is read too and the full index built from it (``load_files``), unless
    ``defer_files``: then the caller reads it later (after the signatures, or never when it needs no file).
    Members named in ``unread`` (SHA256SUMS, for a caller that checks nothing against it: ``kit inspect`` without a
    key) are bounded by their sizes like the rest but not read, and are not in ``members``.
    """
    location = reader.read_index(stream, caps)
    index = location.index

    def missing(name: str) -> KitError:
        return ArchiveError(f"kit index has no {name}: not a complete kit")

    if index.format_version == 2:
        head = MetadataBudget(0, frames=len(index.frames), format_version=2)
    else:
        head = MetadataBudget(len(index.members), frames=len(index.frames))
    # Only the metadata members are located and read (inspect of a kit of many files reads nothing else).
    members, envelope, manifest, read_list = _assemble(
        index.sizes(),
        lambda name: reader.member_chunks(stream, index.locate(name), caps),
        caps,
        head,
        source="kit index",
        what=lambda name: name,
        missing=missing,
        unread=unread,
    )
    if manifest.format_version != index.format_version:
        # docs/format.md §0: one kit, one format. Checked here, where every reader of a kit file gets its metadata
        # (inspect without a key included), not only against the signed manifest: the index's format decides how
        # payload is located and what bounds the metadata, so a manifest of the other format is no kit at all.
        raise ArchiveError(
            f"kit index is format {index.format_version}, {MANIFEST_JSON} is format {manifest.format_version}: "
            "not one kit (rebuild it)"
        )
    # Where the payload ends is signed (the manifest's frames); the index must end it there too: checked on the
    # full index (load_files), where the file lying past the signed frames can be named.
    metadata = KitMetadata(
        members=members, envelope=envelope, manifest=manifest, read_file_list=read_list, location=location
    )
    if not defer_files:
        load_files(metadata)
    return metadata


def located_index(stream: BinaryIO, caps: Caps) -> KitIndex:
    """A kit file's index with every member located (format 2: payload members from its file list, which is read
    and checked against manifest.json and SHA256SUMS, but not against any signature)."""
    return read_metadata(stream, caps).location.index


def read_target_metadata(
    stream: BinaryIO,
    caps: Caps,
    *,
    index: KitIndex | None = None,
    keep_file_list: bool = True,
    defer_files: bool = False,
) -> Metadata:
    """The new kit's metadata a delta carries under ``delta/target/``, read through the delta's index (its payload
    members placed by the delta's own file list; ``index``: that full index, when the caller has read it), file
    list included (its bytes kept in ``members`` unless ``keep_file_list`` is False: parsed as read, not held),
    unless ``defer_files``: then the caller reads it later (``load_files``, after the signatures)."""
    if index is None:
        index = read_metadata(stream, caps).location.index
    prefix = f"{TARGET_DIR}/"
    sizes = {path[len(prefix) :]: size for path, size in index.sizes().items() if path.startswith(prefix)}

    def missing(name: str) -> KitError:
        return IntegrityError(f"delta kit lacks {TARGET_DIR}/{name}")

    members, envelope, manifest, read_list = _assemble(
        sizes,
        lambda name: reader.member_chunks(stream, index.locate(prefix + name), caps),
        caps,
        # The target's members are content of the delta its signature covers (verified before this is read), so
        # the budget is the largest kit the caps allow, not one derived from unsigned counts.
        MetadataBudget(caps.max_members, frames=caps.max_frames),
        source=f"delta kit index ({prefix})",
        what=lambda name: prefix + name,
        missing=missing,
    )
    metadata = Metadata(
        members=members,
        envelope=envelope,
        manifest=manifest,
        read_file_list=read_list,
        file_list_name=prefix + FILE_LIST,
        keep_file_list=keep_file_list,
    )
    if not defer_files:
        load_files(metadata)
    return metadata


def read_installed_metadata(directory: confined.Directory, caps: Caps) -> Metadata:
    """An installed kit's metadata files at the top of ``directory`` (format 2: manifest.files.jsonl too); links
    and special files are refused."""

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

        def read(name: str) -> Iterator[bytes]:
            # Read up to the size the directory listed (checked against the caps before anything is read); a file
            # that grew meanwhile is refused, one that shrank ends short and fails its size check.
            fd, left = fds[name], sizes[name]
            os.lseek(fd, 0, os.SEEK_SET)
            while left:
                try:
                    piece = os.read(fd, min(left, _PIECE))
                except OSError as exc:
                    raise confined.host_error(exc, directory.name(name), "read") from exc
                if not piece:
                    return
                left -= len(piece)
                yield piece
            if os.read(fd, 1):
                raise ArchiveError(f"{directory.name(name)}: grew while being read")

        # An installed directory lists no member count before its manifest is read: the caps' largest kit.
        members, envelope, manifest, read_list = _assemble(
            sizes,
            read,
            caps,
            MetadataBudget(caps.max_members, frames=caps.max_frames),
            source=directory.shown,
            what=lambda name: directory.name(name),
            missing=missing,
        )
        metadata = Metadata(
            members=members,
            envelope=envelope,
            manifest=manifest,
            read_file_list=read_list,
            file_list_name=directory.name(FILE_LIST),
            keep_file_list=True,
        )
        load_files(metadata)
    finally:
        for fd in fds.values():
            os.close(fd)
    return metadata


def _joined(pieces: Iterable[bytes], size: int) -> bytes:
    """A member's pieces as one bytes object; without a second copy of a large one (BytesIO hands out its buffer)."""
    buffer = io.BytesIO()
    for piece in pieces:
        if buffer.tell() + len(piece) > size:
            raise ArchiveError(f"member holds more than the {size} bytes listed")
        buffer.write(piece)
    return buffer.getvalue()


def _assemble(
    sizes: Mapping[str, int],
    read_pieces: Callable[[str], Iterator[bytes]],
    caps: Caps,
    head: MetadataBudget,
    *,
    source: str,
    what: Callable[[str], str],
    missing: Callable[[str], KitError],
    unread: frozenset[str] = frozenset(),
) -> tuple[dict[str, bytes], Envelope, Manifest, Callable[[], Iterator[bytes]] | None]:
    """The shared rules: which names, how many, how big, parsed how. ``sizes`` holds every name present.

    manifest.json and manifest.dsse.json are read first, bounded by ``head`` (format 2: the frames alone); the
    count of files manifest.json states (refused over --max-members) then bounds SHA256SUMS, the file list and
    the attestations, which are read next. The file list is not read here: the returned callable reads it.
    ``read_pieces`` hands out a member's bytes in pieces, every member check done by the last one."""

    def read(name: str) -> bytes:
        return _joined(read_pieces(name), sizes[name])

    for name in (MANIFEST_JSON, MANIFEST_DSSE):
        _check_present(name, sizes, caps, head, what, missing)
    envelope_bytes = read(MANIFEST_DSSE)
    manifest_bytes = read(MANIFEST_JSON)
    envelope = Envelope.from_bytes(envelope_bytes, what=what(MANIFEST_DSSE))
    manifest = Manifest.from_bytes(manifest_bytes, what=what(MANIFEST_JSON), limits=head.manifest_limits())
    budget = head
    if manifest.file_list is not None:
        count = manifest.file_list.count
        if count > caps.max_members:
            raise ArchiveError(
                f"{what(MANIFEST_JSON)}: fileList.count is {count} files, more than --max-members {caps.max_members}; "
                f"pass --max-members {count} to read a kit this large"
            )
        budget = MetadataBudget(count, frames=head.frames, format_version=2)
    names = metadata_names(sizes, manifest.format_version)
    attestations = [name for name in names if name.startswith(f"{ATTESTATIONS_DIR}/")]
    if len(attestations) > MAX_ATTESTATIONS:
        raise ArchiveError(f"{source} lists {len(attestations)} attestations; at most {MAX_ATTESTATIONS} are allowed")
    for name in names:
        # Each document may cost what it would in an honest kit of this many files (docs/parse-limits.md):
        # checked on sizes before anything is read, on structure before parsing.
        _check_present(name, sizes, caps, budget, what, missing)
    if manifest.file_list is not None and sizes[FILE_LIST] != manifest.file_list.size:
        raise ArchiveError(
            f"{what(FILE_LIST)}: {sizes[FILE_LIST]} bytes, but {what(MANIFEST_JSON)} fileList.size says "
            f"{manifest.file_list.size}"
        )
    # Optional members are unsigned: bound them together, from their sizes, before any is read.
    optional_bytes = sum(sizes[name] for name in names if name not in METADATA_FILES)
    if optional_bytes > caps.max_metadata:
        raise ArchiveError(
            f"{source} lists {optional_bytes} bytes of attestations and Sigstore bundle; "
            f"at most {caps.max_metadata} are allowed together"
        )
    members: dict[str, bytes] = {}
    for name in names:
        if name == MANIFEST_JSON:
            members[name] = manifest_bytes
        elif name == MANIFEST_DSSE:
            members[name] = envelope_bytes
        elif name != FILE_LIST and name not in unread:
            members[name] = read(name)
    for path in (f.path for f in manifest.files):
        problem = paths.problem_with(path)
        if problem is not None:
            raise FormatError(f"{what(MANIFEST_JSON)}: file {path!r}: {problem}")
    read_list = (lambda: read_pieces(FILE_LIST)) if manifest.file_list is not None else None
    return members, envelope, manifest, read_list


def _check_present(
    name: str,
    sizes: Mapping[str, int],
    caps: Caps,
    budget: MetadataBudget,
    what: Callable[[str], str],
    missing: Callable[[str], KitError],
) -> None:
    if name not in sizes:
        raise missing(name)
    # Format 2's file list and SHA256SUMS grow with the signed file count and span many frames (docs/format.md §0.9):
    # their caps are the budget's, not the one-document cap.
    if sizes[name] > caps.max_metadata and not (budget.format_version == 2 and name in (FILE_LIST, SHA256SUMS)):
        raise ArchiveError(f"{what(name)}: {sizes[name]} bytes exceeds the metadata cap of {caps.max_metadata}")
    budget.check_size(name, sizes[name])


def load_files(metadata: Metadata) -> Manifest:
    """Format 2: read the file list and fill ``metadata`` in place with what it says; the manifest with its files.

    The list must have the size and SHA-256 ``metadata.manifest`` states in ``fileList`` (IntegrityError), be in
    its one byte form with ``fileList.count`` lines and ``payloadBytes`` bytes, and say exactly what SHA256SUMS
    says (FormatError, IntegrityError); a kit file's full index (payload members from the list, then the metadata
    members of its index) must then tile the stream (ArchiveError). Called after the signatures when the caller
    checks them, so the count that bounds the work is the signed one. Nothing to do for format 1 or when done.
    """
    read_list = metadata.read_file_list
    manifest = metadata.manifest
    ref = manifest.file_list
    what = metadata.file_list_name
    if read_list is None or ref is None:
        return manifest
    # The manifest.json beside the list (a delta's delta/target/, an installed directory's), named as the list is.
    signed_by = what[: -len(FILE_LIST)] + MANIFEST_JSON if what.endswith(FILE_LIST) else MANIFEST_JSON
    digest = hashlib.sha256()
    read = 0
    kept = io.BytesIO() if metadata.keep_file_list else None

    def pieces() -> Iterator[bytes]:
        nonlocal read
        for piece in read_list():
            read += len(piece)
            if read > ref.size:
                raise ArchiveError(f"{what}: more than the {ref.size} bytes {signed_by} fileList.size says")
            digest.update(piece)
            if kept is not None:
                kept.write(piece)
            yield piece

    stream = pieces()
    frame_sizes = [f.size for f in manifest.frames]
    try:
        files = filelist.parse(stream, count=ref.count, frame_sizes=frame_sizes, what=what, signed_by=signed_by)
    except FormatError:
        # Parsed piece by piece as it is read: a list that breaks the grammar may be one that was altered, which is
        # what its digest says first (read to its end, bounded by fileList.size).
        for _ in stream:
            pass
        _check_list_digest(digest.hexdigest(), read, ref, what, signed_by)
        raise
    _check_list_digest(digest.hexdigest(), read, ref, what, signed_by)
    payload = files.payload_bytes()
    if payload != ref.payload_bytes:
        raise FormatError(
            f"{what}: files hold {payload} bytes, but {signed_by} fileList.payloadBytes says {ref.payload_bytes}"
        )
    check_component_payloads([(c.id, c.payload) for c in manifest.components], files, what=what, signed_by=signed_by)
    checksums.check_listing(files, metadata.members[SHA256SUMS], what=what)
    manifest = manifest.with_files(files)
    if kept is not None:
        members = dict(metadata.members)
        members[FILE_LIST] = kept.getvalue()
        metadata.members = {name: members[name] for name in metadata_names(members)}
    metadata.manifest = manifest
    metadata.read_file_list = None
    if isinstance(metadata, KitMetadata):
        location = metadata.location  # of format 2 too: read_metadata refuses an index of another format
        index = location.index.with_payload(files)
        index.check_payload_split(len(manifest.frames), metadata.members)
        metadata.location = dataclasses.replace(location, index=index)
    return manifest


def _check_list_digest(observed: str, read: int, ref: FileListRef, what: str, signed_by: str) -> None:
    if read != ref.size:
        raise ArchiveError(f"{what}: {read} bytes, but {signed_by} fileList.size says {ref.size}")
    if observed != ref.sha256:
        raise IntegrityError(
            f"{what}: sha256 {observed} differs from {signed_by} fileList.sha256 {ref.sha256}; the kit was altered"
        )


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
