"""Planning and staging of a directory patch: decide every step from the installed tree, then write each new or
changed file under ``.kit-patch/`` from the delta's carried frames or the installed base files, hashed as written.

Nothing outside ``.kit-patch/`` is changed here: the journal (``patch_journal``) commits the plan afterwards.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from kitbuilder import faults
from kitbuilder.archive import content_delta, layout, reader
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import MANIFEST_JSON, FileEntry, Manifest
from kitbuilder.errors import HostIOError, IntegrityError, KitError
from kitbuilder.ops.confined import CHUNK, Directory, host_error
from kitbuilder.ops.delta_open import VerifiedDelta
from kitbuilder.ops.frame_reuse import FrameMap
from kitbuilder.ops.kitfile import Metadata, check_layout
from kitbuilder.ops.patch_journal import Operation, hash_fd, unsafe


@dataclass(frozen=True)
class _Piece:
    """Part of a target file: ``length`` content bytes from a frame the delta carries (``span``: its member
    ``delta/frames/<digest>``, from byte ``skip`` of the frame) or from the installed base file ``path`` at
    ``offset`` (a chunk the base had)."""

    length: int
    span: MemberSpan | None = None
    path: str = ""
    offset: int = 0
    skip: int = 0  # delta pieces: bytes of the carried frame before this file's content (a group's other members)


@dataclass(frozen=True)
class _Patch:
    """A target file the delta carries as a content delta (``delta/patches/<target>/<base>``, member ``span``),
    decoded against an installed base file with the base content ``base_sha256`` (``donors``: the base's
    signed paths holding it, each re-hashed before use)."""

    span: MemberSpan
    base_sha256: str
    base_size: int
    donors: tuple[str, ...]


# Where a staged file's bytes come from: installed base files with its content (any of them), or pieces: its
# group frame as the delta carries it, its content as the delta carries it (``delta/files/…``), or for a large
# file its chunks one by one (from the delta, or from the installed base files that held them); or a content
# delta against an installed base file.
Source = tuple[str, ...] | tuple[_Piece, ...] | tuple[_Patch]


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...]
    sources: dict[str, tuple[FileEntry, Source]]  # staged name -> (target file, where its bytes come from)
    metadata: dict[str, str]  # staged name -> target metadata member
    reused: int
    removed: int


class Planner:
    """Decide every step from the installed tree as it is, refusing trees kit cannot patch without guessing."""

    def __init__(self, root: Directory, delta: VerifiedDelta, installed: Metadata, base: Manifest) -> None:
        self.root = root
        self.delta = delta
        self.installed = installed
        self.base = base
        self.kinds: dict[str, str | None] = {}

    def kind(self, path: str) -> str | None:
        if path not in self.kinds:
            with self.root.parent(path, create=False, refuse=unsafe) as found:
                self.kinds[path] = None if found is None else self.root.kind(found[1], found[0])
        return self.kinds[path]

    def plan(self) -> Plan:
        target = self.delta.target_manifest
        members = self.delta.target.members
        wanted = {f.path for f in target.files} | set(members)
        check_layout((f.path for f in target.files), members, what=f"{self.delta.path}: target manifest")
        base_paths = {f.path: f for f in self.base.files}
        deletes = sorted((set(base_paths) | set(self.installed.members)) - wanted)
        deleting = set(deletes)
        for path in deletes:
            self.kind(path)  # refuses a link on the way now, not after the commit
        rmdirs: list[str] = []
        for path in sorted(wanted):
            self._check_prefixes(path, deleting)
            if self.kind(path) == "dir":
                rmdirs += self._emptied(path, deleting)
            elif self.kind(path) == "other":
                raise unsafe(f"{self.root.name(path)}: is a special file where the new kit has a regular file")
        operations = [Operation("delete", p) for p in deletes]
        operations += [Operation("rmdir", p) for p in sorted(set(rmdirs))]
        sources: dict[str, tuple[FileEntry, Source]] = {}
        reused = 0
        chooser = _Sources(self.delta, self.base)
        for number, item in enumerate(sorted(target.files, key=lambda f: f.path)):
            # Kept files are re-hashed: an installed tree may have been edited since it was verified.
            if item.path in base_paths and self._holds(item.path, item.sha256):
                reused += 1
                continue
            name = f"{number:06d}"
            sources[name] = (item, chooser.source(item))
            operations.append(Operation("replace", item.path, name))
        metadata: dict[str, str] = {}
        # manifest.json last: an installed manifest naming the target means every other file is in place.
        for number, member in enumerate(sorted(members, key=lambda m: m == MANIFEST_JSON)):
            name = f"meta-{number:03d}"
            metadata[name] = member
            operations.append(Operation("replace", member, name))
        self._check_one_filesystem(operations)
        return Plan(tuple(operations), sources, metadata, reused, len(deletes))

    def _check_one_filesystem(self, operations: list[Operation]) -> None:
        """Every path a step touches, and each directory on the way, is on the filesystem of the kit directory.

        Staged files are renamed into place from .kit-patch, and a rename cannot cross a mount point: one found
        only after the commit would stop every rerun there, with the directory half patched. So it is refused
        now, before anything changes.
        """
        home = self.root.device("")
        checked: set[str] = set()
        for operation in operations:
            parts = operation.path.split("/")
            for end in range(1, len(parts) + 1):
                prefix = "/".join(parts[:end])
                kind = self.kind(prefix)
                if kind is None:
                    break  # absent: what kit creates below here is on its parent's filesystem
                if prefix not in checked and self.root.device(prefix) != home:
                    raise HostIOError(
                        f"{self.root.name(prefix)}: is on another filesystem than {self.root.shown} (a mount point?); "
                        "kit renames each new file into place, which cannot cross filesystems: install the kit on "
                        "one filesystem and rerun"
                    )
                checked.add(prefix)
                if kind != "dir":
                    break  # a file or link the steps before replace or delete: nothing below it exists

    def _holds(self, path: str, sha256: str) -> bool:
        fd = self.root.open_regular(path, refuse=unsafe)
        return fd is not None and hash_fd(fd, self.root.name(path)) == sha256

    def _check_prefixes(self, path: str, deleting: set[str]) -> None:
        parts = path.split("/")
        for end in range(1, len(parts)):
            prefix = "/".join(parts[:end])
            found = self.kind(prefix)
            if found is None:
                return
            if found == "dir":
                continue
            if found in ("file", "link") and prefix in deleting:
                return  # a base file the target drops: deleted before anything is placed below it
            raise unsafe(
                f"{self.root.name(prefix)}: is a {'symbolic link' if found == 'link' else 'file'} that is not part "
                f"of the kit, but the new kit needs a directory there (for {path})"
            )

    def _emptied(self, path: str, deleting: set[str]) -> list[str]:
        """``[path]`` when the directory there holds only directories and base files the target drops."""
        with self.root.parent(path, create=False, refuse=unsafe) as found:
            assert found is not None
            top = Directory.open_below(found[0], found[1], self.root.name(path), refuse=unsafe)
        if top is None:
            return []
        with top:
            for relative, kind in top.walk():
                full = f"{path}/{relative}"
                if kind == "dir":
                    if top.device(relative) != self.root.device(""):
                        raise HostIOError(
                            f"{self.root.name(full)}: is on another filesystem than {self.root.shown} (a mount "
                            "point?), but the new kit needs a file at "
                            f"{self.root.name(path)}: unmount it and rerun"
                        )
                    continue
                if kind not in ("file", "link") or full not in deleting:
                    raise unsafe(
                        f"{self.root.name(path)}: the new kit needs a file here, but this directory holds "
                        f"{relative}, which is not a file of the old kit; move it away"
                    )
        return [path]


class _Sources:
    """Where each target file's bytes can come from, decided from signed documents only (delta, target, base)."""

    def __init__(self, delta: VerifiedDelta, base: Manifest) -> None:
        self.delta = delta
        self.target = FrameMap(delta.target_manifest, what=f"{delta.path}: target {MANIFEST_JSON}")
        self.carried = delta.carried
        self.base = FrameMap(base, what=f"installed {MANIFEST_JSON}")
        # Target contents the delta carries as content members (a content delta, or whole), checked by name when
        # the delta was opened (``carried_contents``, as file mode uses them).
        self.contents = delta.contents
        self.delta_map = FrameMap(delta.manifest, what=str(delta.path)) if self.contents else None
        patch_bases = {c.base_sha256 for c in self.contents.values() if c.base_sha256 is not None}
        self.donors: dict[tuple[str, int], list[str]] = {}
        self.patch_donors: dict[str, list[FileEntry]] = {}
        for entry in base.files:
            self.donors.setdefault((entry.sha256, entry.size), []).append(entry.path)
            if entry.sha256 in patch_bases:
                self.patch_donors.setdefault(entry.sha256, []).append(entry)
        # Chunk frames of the base's large files, by digest: which installed file holds those bytes, and where.
        self.base_chunks: dict[str, tuple[str, int]] = {}
        for role in self.base.roles:
            if role is not None and role.kind == "chunk":
                self.base_chunks.setdefault(
                    self.chunk_sha(self.base, role.files[0], role.chunk), (role.files[0].path, role.chunk)
                )

    @staticmethod
    def chunk_sha(frames: FrameMap, entry: FileEntry, chunk: int) -> str:
        return frames.spans[entry.path].frames[1 + chunk].sha256

    def source(self, item: FileEntry) -> Source:
        span = self.target.span_of(item)
        if len(span.frames) == 1:
            carried = self.carried.get(span.frames[0].sha256)
            if carried is not None and carried.size == span.frames[0].size:
                return (_Piece(item.size, span=carried, skip=span.at + layout.BLOCK),)
        donors = tuple(self.donors.get((item.sha256, item.size), ()))
        if donors:
            return donors
        held = self.contents.get(item.sha256)
        if held is not None and self.delta_map is not None and len(span.frames) == 1:
            member = self.delta_map.span_of(held.entry)
            if held.base_sha256 is None:
                return (_Piece(item.size, span=member),)
            bases = [e for e in self.patch_donors.get(held.base_sha256, ()) if not layout.is_large(e.size)]
            if not bases:
                raise IntegrityError(
                    f"{self.delta.path}: {held.entry.path}: a content delta against a base content (sha256 "
                    f"{held.base_sha256[:16]}…) the installed kit does not hold as a small file; the delta was "
                    "not made for this base: obtain the matching one"
                )
            return (_Patch(member, held.base_sha256, bases[0].size, tuple(e.path for e in bases)),)
        if len(span.frames) == 1:
            return ()
        # A large file changed in part: chunk by chunk, from the delta when it carries the chunk, else from the
        # installed file the base had it in. The whole is hashed against the target's digest when staged.
        pieces: list[_Piece] = []
        start = 0
        for frame in span.frames[1:]:
            length = min(frame.size, item.size - start)
            carried = self.carried.get(frame.sha256)
            if carried is not None and carried.size == frame.size:
                pieces.append(_Piece(length, span=carried))
            elif frame.sha256 in self.base_chunks:
                path, number = self.base_chunks[frame.sha256]
                pieces.append(_Piece(length, path=path, offset=number * layout.CHUNK))
            else:
                return ()  # neither has it: refused when staged
            start += length
        return tuple(pieces)


def stage(root: Directory, staging: Directory, delta: VerifiedDelta, plan: Plan, caps: Caps) -> int:
    """Write every staged file (fsynced) under ``staging``; returns how many payload files will be written."""
    for name, (item, source) in sorted(plan.sources.items()):
        if patches := tuple(p for p in source if isinstance(p, _Patch)):
            _decode_patch(root, staging, name, item, patches[0], delta, caps)
        elif pieces := tuple(p for p in source if isinstance(p, _Piece)):
            _assemble(root, staging, name, item, pieces, delta, caps)
        else:
            _copy_donor(root, staging, name, item, tuple(p for p in source if isinstance(p, str)))
        faults.point("patch-dir-staged-file")
    for name, member in plan.metadata.items():
        with staging.new_file(name) as out:
            out.write(delta.target.members[member])
    staging.sync()
    return len(plan.sources)


def _copy_donor(root: Directory, staging: Directory, name: str, item: FileEntry, donors: tuple[str, ...]) -> None:
    """Copy an installed base file with the target's content, hashing what is copied (not a separate read)."""
    for donor in donors:
        fd = root.open_regular(donor, refuse=unsafe)
        if fd is None:
            continue
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb") as source, staging.new_file(name) as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() == item.sha256:
            return
        staging.unlink(name)
    raise _not_held(item)


def _decode_patch(
    root: Directory, staging: Directory, name: str, item: FileEntry, patch: _Patch, delta: VerifiedDelta, caps: Caps
) -> None:
    """A file from a content delta decoded against an installed base file, which is re-hashed first (it may have
    been edited since it was installed); the result must be the target's signed size and digest [4]."""
    # The patch member is read through the verified descriptor, frame and content checked by the member reader.
    data = b"".join(reader.member_chunks(delta.stream, patch.span, caps, against="signed"))
    base = _installed_content(root, patch)
    if base is None:
        raise IntegrityError(
            f"{item.path}: the installed base file its content delta needs ({patch.donors[0]}, sha256 "
            f"{patch.base_sha256[:16]}…) is missing or was changed; reinstall the kit from a full kit"
        )
    content = content_delta.decode(
        data, base, size=item.size, sha256=item.sha256, what=f"{delta.path}: {patch.span.path}"
    )
    with staging.new_file(name) as out:
        out.write(content)


def _installed_content(root: Directory, patch: _Patch) -> bytes | None:
    """The bytes of an installed base file that holds the signed base content, or None (read to one byte past
    the signed size at most: a file grown since cannot make this read large)."""
    for donor in patch.donors:
        fd = root.open_regular(donor, refuse=unsafe)
        if fd is None:
            continue
        try:
            with os.fdopen(fd, "rb") as source:
                data = source.read(patch.base_size + 1)
        except OSError as exc:
            raise host_error(exc, root.name(donor), "read") from exc
        if len(data) == patch.base_size and hashlib.sha256(data).hexdigest() == patch.base_sha256:
            return data
    return None


def _not_held(item: FileEntry) -> KitError:
    return IntegrityError(f"{item.path}: neither the delta nor the installed kit holds its content")


def _assemble(
    root: Directory,
    staging: Directory,
    name: str,
    item: FileEntry,
    pieces: tuple[_Piece, ...],
    delta: VerifiedDelta,
    caps: Caps,
) -> None:
    """A file from pieces: frames the delta carries (checked by the member reader), chunks of installed base files.

    Installed files may have been edited since they were installed, so the whole is hashed as it is written
    and must have the target's digest, else the staged file is removed and the patch stops [4].
    """
    digest = hashlib.sha256()
    with staging.new_file(name) as out:
        for piece in pieces:
            left = piece.length
            if piece.span is not None:
                # The span comes from the delta's signed manifest, the bytes from the descriptor that was verified;
                # the member reader checks the frame digest, and the content digest before its last piece, so the
                # carried frame is read to its end even when this file is only part of it.
                skip = piece.skip
                for data in reader.member_chunks(delta.stream, piece.span, caps, against="signed"):
                    taken = data[skip : skip + left]
                    skip = max(0, skip - len(data))
                    digest.update(taken)
                    out.write(taken)
                    left -= len(taken)
                continue
            fd = root.open_regular(piece.path, refuse=unsafe)
            if fd is None:
                break
            try:
                offset = piece.offset
                while left > 0:
                    data = os.pread(fd, min(CHUNK, left), offset)
                    if not data:
                        break
                    digest.update(data)
                    out.write(data)
                    left -= len(data)
                    offset += len(data)
            except OSError as exc:
                raise host_error(exc, root.name(piece.path), "read") from exc
            finally:
                os.close(fd)
    if digest.hexdigest() != item.sha256:
        staging.unlink(name)
        raise _not_held(item)
