"""kit patch on an installed (extracted) kit directory: journaled, per-file atomic, rolls forward after a crash.

Order of work, all under an flock on the directory and all relative to one
open descriptor of it (no link inside it is ever followed):

1. the delta is verified in full through one open descriptor, and its target
   metadata checked (``delta.open_verified_delta``); nothing else reads it;
2. a journal left by a killed run is finished first (roll forward), but only
   when it belongs to this delta's base and target; staging without a journal
   is discarded;
3. every new or changed file is written under ``.kit-patch/`` and fsynced,
   every kept file is re-hashed;
4. the journal (the delta's base and target digests, the base manifest, the
   operations) is written, fsynced and renamed into place: the commit point;
5. the operations are carried out: deletions, then directories that must
   become files, then one rename per staged file (metadata last). Each step
   can run again after a kill at any instant and reach the same state;
6. the journal is removed, then the staging directory.

``.kit-patch`` is a reserved name (``core.paths``): no kit can ship it, so
no signed input can plant a journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kitbuilder import faults
from kitbuilder.archive import layout, reader
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core import jsonio, paths
from kitbuilder.core.manifest import MANIFEST_JSON, MAX_ATTESTATIONS, FileEntry, Manifest, is_optional_metadata
from kitbuilder.errors import FormatError, HostIOError, IntegrityError, KitError, UsageError
from kitbuilder.ops.confined import CHUNK, Directory, host_error, read_bounded, remove_directories
from kitbuilder.ops.delta import FRAMES_DIR, VerifiedDelta, open_verified_delta
from kitbuilder.ops.frame_reuse import FrameMap
from kitbuilder.ops.kitfile import Metadata, check_layout, read_installed_metadata
from kitbuilder.ops.verify import VerifyOptions, check_signed_metadata

STAGING = ".kit-patch"
JOURNAL = "journal.json"
JOURNAL_TEMP = "journal.part"
BASE_MANIFEST = "base-manifest.json"
# A journal holds one small operation per file of the base or the target (and a few directories); its size
# is bounded by that before it is parsed, so a planted one cannot cost more than a genuine one would.
JOURNAL_SLACK = 1 << 20
BYTES_PER_OPERATION = 512
# Optional metadata files an installed kit may hold besides those its manifest lists (attestations, bundle).
MAX_OPTIONAL_METADATA = MAX_ATTESTATIONS + 1
JOURNAL_VERSION = 1
STAGED_NAME = re.compile(r"[0-9]{6}|meta-[0-9]{3}")
OPERATIONS = ("delete", "rmdir", "replace")


@dataclass(frozen=True)
class DirPatchResult:
    directory: Path
    manifest: Manifest
    reused: int
    written: int
    removed: int
    rolled_forward: bool
    already_patched: bool = False


@dataclass(frozen=True)
class Operation:
    """One idempotent step: delete a file, remove a directory that must become a file, or rename a staged file."""

    op: str
    path: str
    staged: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"op": self.op, "path": self.path, **({"staged": self.staged} if self.staged else {})}


@dataclass(frozen=True)
class Journal:
    """What a committed patch will do, bound to the base and target it goes between.

    Beside it, ``base-manifest.json`` keeps the installed ``manifest.json`` the
    patch started from: its digest is signed by the delta (``baseManifestSha256``),
    so after a kill it says which files the base had (and so which may be
    deleted) without trusting anything unsigned.
    """

    base_sha256: str
    target_sha256: str
    delta_sha256: str
    operations: tuple[Operation, ...]

    def to_bytes(self) -> bytes:
        return jsonio.dump_pretty(
            {
                "journalVersion": JOURNAL_VERSION,
                "baseManifestSha256": self.base_sha256,
                "targetManifestSha256": self.target_sha256,
                "deltaSha256": self.delta_sha256,
                "operations": [o.to_json() for o in self.operations],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str) -> Journal:
        """Parse strictly; FormatError for anything kit would not have written."""
        document = jsonio.load_object(data, what=what)
        keys = {"journalVersion", "baseManifestSha256", "targetManifestSha256", "deltaSha256"}
        if set(document) != keys | {"operations"} or document["journalVersion"] != JOURNAL_VERSION:
            raise FormatError(f"{what}: not a journal this version of kit writes (fields {sorted(document)})")
        if not all(isinstance(document[key], str) for key in keys - {"journalVersion"}):
            raise FormatError(f"{what}: the digests must be strings")
        operations = document["operations"]
        if not isinstance(operations, list):
            raise FormatError(f"{what}: operations must be a list")
        parsed: list[Operation] = []
        for number, item in enumerate(operations):
            if (
                not isinstance(item, dict)
                or item.get("op") not in OPERATIONS
                or not isinstance(item.get("path"), str)
                or set(item) != ({"op", "path", "staged"} if item.get("op") == "replace" else {"op", "path"})
                or (item["op"] == "replace" and not isinstance(item["staged"], str))
            ):
                raise FormatError(f"{what}: operations[{number}] is not an operation kit writes")
            parsed.append(Operation(item["op"], item["path"], item.get("staged")))
        return cls(
            base_sha256=document["baseManifestSha256"],
            target_sha256=document["targetManifestSha256"],
            delta_sha256=document["deltaSha256"],
            operations=tuple(parsed),
        )


def _unsafe(message: str) -> KitError:
    """An installed tree that is not what a kit path promises (a link, a file where a directory must be)."""
    return IntegrityError(f"{message}; reinstall the kit from a full kit, or fix the directory and rerun")


def _state(message: str) -> KitError:
    """Something planted where kit keeps its own state (.kit-patch)."""
    return UsageError(f"{message}; remove it and rerun")


def patch_directory(
    directory: Path, delta_path: Path, *, options: VerifyOptions, allow_downgrade: bool = False
) -> DirPatchResult:
    """Patch the kit installed in ``directory`` with the delta at ``delta_path`` (see the module docstring)."""
    with open_verified_delta(delta_path, options) as delta, Directory.open(directory, what="kit directory") as root:
        root.lock(busy=f"{directory}: another kit patch is patching it; wait for it to finish")
        rolled_forward = _recover(root, delta, options.caps)
        installed = read_installed_metadata(root, options.caps)
        _, _, base_manifest = check_signed_metadata(installed, options.policy)
        installed_sha = hashlib.sha256(installed.members[MANIFEST_JSON]).hexdigest()
        if installed_sha == delta.target_sha256:
            # Already patched (for example by the roll-forward above): nothing to do, and that is success, once
            # every file is seen to hold the signed content (as file mode verifies an already patched kit).
            _check_installed(root, base_manifest)
            files = len(base_manifest.files)
            return DirPatchResult(directory, base_manifest, files, 0, 0, rolled_forward, already_patched=True)
        delta.check_applies(base_manifest, installed_sha, directory, allow_downgrade=allow_downgrade)
        plan = _Planner(root, delta, installed, base_manifest).plan()
        journal = Journal(
            base_sha256=installed_sha,
            target_sha256=delta.target_sha256,
            delta_sha256=delta.report.kit_sha256,
            operations=plan.operations,
        )
        staging = root.make_private_dir(STAGING)
        try:
            with staging:
                written = _stage(root, staging, delta, plan, options.caps)
                faults.point("patch-dir-staged")
                with staging.new_file(BASE_MANIFEST) as out:
                    out.write(installed.members[MANIFEST_JSON])
                with staging.new_file(JOURNAL_TEMP) as out:
                    out.write(journal.to_bytes())
                try:
                    os.rename(JOURNAL_TEMP, JOURNAL, src_dir_fd=staging.fd, dst_dir_fd=staging.fd)
                except OSError as exc:
                    raise host_error(exc, staging.name(JOURNAL), "write") from exc
                staging.sync()
        except BaseException:
            # Not committed: the installed files are untouched; discard the staging (or leave it to the next run).
            with contextlib.suppress(KitError):
                root.remove_tree(STAGING, refuse=_state)
            raise
        faults.point("patch-dir-committed")
        _carry_out(root, journal, _Targets(delta))
        _finish(root)
        return DirPatchResult(directory, delta.target_manifest, plan.reused, written, plan.removed, rolled_forward)


# ---------------------------------------------------------------------------------------------------------------
# recovery and carrying out


def _check_installed(root: Directory, manifest: Manifest) -> None:
    """Every file ``manifest`` lists is a regular file under ``root`` with the signed content, else IntegrityError."""
    for item in manifest.files:
        fd = root.open_regular(item.path, refuse=_unsafe)
        if fd is None or _hash_fd(fd, root.name(item.path)) != item.sha256:
            raise IntegrityError(
                f"{root.name(item.path)}: missing or differs from the installed kit's signed manifest; "
                "reinstall the kit from a full kit"
            )


@dataclass(frozen=True)
class _Targets:
    """What the verified target says each path must hold, and what may be deleted from the base."""

    wanted: dict[str, str]

    def __init__(self, delta: VerifiedDelta) -> None:
        wanted = {f.path: f.sha256 for f in delta.target_manifest.files}
        wanted.update({name: hashlib.sha256(data).hexdigest() for name, data in delta.target.members.items()})
        object.__setattr__(self, "wanted", wanted)


def _recover(root: Directory, delta: VerifiedDelta, caps: Caps) -> bool:
    """Finish a committed patch of this base into this target (True), or discard uncommitted staging (False)."""
    staging = root.open_subdir(STAGING, refuse=_state)
    if staging is None:
        return False
    targets = _Targets(delta)
    with staging:
        kind = staging.kind(JOURNAL)
        if kind is None:
            journal = None
        elif kind != "file":
            raise _state(f"{staging.name(JOURNAL)}: is not a file kit wrote (a link or a directory?)")
        else:
            base = _read_base_manifest(staging, delta, caps)
            # Bounded before it is parsed, and only by signed documents: one step per target file (its rename),
            # per target path that is a directory now (its removal) and per base file (its deletion). A planted
            # base-manifest.json (not the delta's base) counts for nothing.
            operations = 2 * len(targets.wanted) + (len(base.files) + MAX_OPTIONAL_METADATA if base else 0)
            data = _read_staged(staging, JOURNAL, JOURNAL_SLACK + BYTES_PER_OPERATION * operations)
            try:
                journal = Journal.from_bytes(data, what=staging.name(JOURNAL))
                if _finished(root, journal, delta):
                    journal = None
                else:
                    _check_journal(journal, delta, targets, base, staging.name(JOURNAL))
            except FormatError as exc:
                raise _foreign_journal(exc, staging.shown) from exc
    if journal is None:
        root.remove_tree(STAGING, refuse=_state)
        root.sync()
        return False
    _carry_out(root, journal, targets)
    _finish(root)
    return True


def _finished(root: Directory, journal: Journal, delta: VerifiedDelta) -> bool:
    """True when another delta's journal has nothing left to do: the installed manifest.json is its target's.

    The rename of manifest.json is a journal's last step, so every step before it is done and only the
    journal's removal was interrupted. Its staging is then discarded like uncommitted staging, and the patch
    proceeds from the installed kit, which is verified as always; the next release's delta is not blocked.
    """
    if (journal.base_sha256, journal.target_sha256) == (delta.base_sha256, delta.target_sha256):
        return False  # this delta's own journal: finish it (its steps are all idempotent)
    fd = root.open_regular(MANIFEST_JSON, refuse=_state)
    return fd is not None and _hash_fd(fd, root.name(MANIFEST_JSON)) == journal.target_sha256


def _read_base_manifest(staging: Directory, delta: VerifiedDelta, caps: Caps) -> Manifest | None:
    """The base manifest kept beside the journal, parsed only when it is the one the delta signs as its base.

    It is hashed in pieces first: a planted one (any size up to the metadata cap) is never held in
    memory, parsed, or allowed to bound the journal. None when it is not this delta's base.
    """
    what = staging.name(BASE_MANIFEST)
    fd = staging.open_regular(BASE_MANIFEST, refuse=_state)
    if fd is None:
        raise _foreign_journal(FormatError(f"{what}: missing or not a regular file"), staging.shown)
    try:
        if os.fstat(fd).st_size > caps.max_metadata or _hash_fd(fd, what, keep=True) != delta.base_sha256:
            return None
        os.lseek(fd, 0, os.SEEK_SET)
        data = read_bounded(
            fd, caps.max_metadata, what=what, too_big=lambda m: _foreign_journal(FormatError(m), staging.shown)
        )
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != delta.base_sha256:
        return None  # changed between the two reads
    try:
        return Manifest.from_bytes(data, what=what)
    except FormatError as exc:
        raise _foreign_journal(exc, staging.shown) from exc


def _read_staged(staging: Directory, name: str, limit: int) -> bytes:
    fd = staging.open_regular(name, refuse=_state)
    if fd is None:
        raise _foreign_journal(FormatError(f"{staging.name(name)}: missing or not a regular file"), staging.shown)
    try:
        return read_bounded(
            fd, limit, what=staging.name(name), too_big=lambda m: _foreign_journal(FormatError(m), staging.shown)
        )
    finally:
        os.close(fd)


def _foreign_journal(exc: FormatError, staging: str) -> FormatError:
    return FormatError(
        f"{exc.message}; kit did not write this journal: remove {staging} and rerun "
        "(reinstall the kit from a full kit if a patch there was interrupted)"
    )


def _check_journal(journal: Journal, delta: VerifiedDelta, targets: _Targets, base: Manifest | None, what: str) -> None:
    """The journal must be this base→target's, and every operation one kit would plan for it."""
    if (journal.base_sha256, journal.target_sha256) != (delta.base_sha256, delta.target_sha256):
        raise UsageError(
            f"{what}: left by an interrupted patch to the kit whose manifest has SHA-256 {journal.target_sha256[:16]}… "
            f"(delta file SHA-256 {journal.delta_sha256[:16]}…), not this delta's target; finish it first with that "
            "delta, or reinstall the kit from a full kit"
        )
    if base is None:
        raise FormatError(f"{what}: {BASE_MANIFEST} beside it is not the base manifest the delta names")
    wanted = targets.wanted
    deletable = {f.path for f in base.files} - set(wanted)
    seen: set[str] = set()
    staged: set[str] = set()
    for number, operation in enumerate(journal.operations):
        where = f"{what}: operations[{number}] ({operation.op} {operation.path!r})"
        problem = paths.problem_with(operation.path)
        if problem is not None:
            raise FormatError(f"{where}: {problem}")
        if operation.op == "replace":
            name = operation.staged or ""
            if operation.path not in wanted or operation.path in seen:
                raise FormatError(f"{where}: not a file of the target kit, or named twice")
            if not STAGED_NAME.fullmatch(name) or name in staged:
                raise FormatError(f"{where}: staged name {name!r} is not one kit gives, or is used twice")
            seen.add(operation.path)
            staged.add(name)
        elif operation.op == "delete":
            if operation.path not in deletable and not (
                is_optional_metadata(operation.path) and operation.path not in wanted
            ):
                raise FormatError(f"{where}: not a file of the base kit that the target drops")
        elif operation.path not in wanted:
            raise FormatError(f"{where}: not a directory the target needs as a file")


def _carry_out(root: Directory, journal: Journal, targets: _Targets) -> None:
    """Every operation, in order; each one reaches the same end state however often it is repeated."""
    staging = root.open_subdir(STAGING, refuse=_state)
    if staging is None:
        raise _state(f"{root.name(STAGING)}: vanished while kit was using it")
    with staging:
        for operation in journal.operations:
            if operation.op == "delete":
                _delete(root, operation.path)
            elif operation.op == "rmdir":
                _rmdir(root, operation.path)
            else:
                _replace(root, staging, operation, targets.wanted[operation.path])
            faults.point("patch-dir-after-op")
    root.sync()


def _delete(root: Directory, path: str) -> None:
    with root.parent(path, create=False, refuse=_unsafe) as found:
        if found is None:
            return  # a parent is gone or is now a file: so is this path
        parent_fd, name = found
        if root.kind(name, parent_fd) in ("file", "link", "other"):
            try:
                os.unlink(name, dir_fd=parent_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise host_error(exc, root.name(path), "remove") from exc
            _sync_fd(parent_fd, root.name(path))
        # A directory here was made by a later step of an earlier run (a file became a directory): done.


def _rmdir(root: Directory, path: str) -> None:
    with root.parent(path, create=False, refuse=_unsafe) as found:
        if found is None:
            return
        parent_fd, name = found
        if root.kind(name, parent_fd) != "dir":
            return  # gone, or already the file that replaces it

        def foreign(message: str) -> KitError:
            return _unsafe(
                f"{root.name(path)}: the new kit needs a file here, but this directory cannot be removed "
                f"({message}: not part of the kit?)"
            )

        # One step per path that must become a file, whatever the depth of the tree below it: the deletions
        # before it emptied it of files, so only directories remain (the journal stays as small as the kits).
        remove_directories(parent_fd, name, root.name(path), refuse=foreign)
        _sync_fd(parent_fd, root.name(path))


def _replace(root: Directory, staging: Directory, operation: Operation, sha256: str) -> None:
    assert operation.staged is not None
    if staging.kind(operation.staged) not in (None, "file"):
        raise UsageError(
            f"{staging.name(operation.staged)}: is not a file kit staged (a link or special file?); "
            f"remove {staging.shown} and rerun"
        )
    fd = staging.open_regular(operation.staged, refuse=_state)
    if fd is None:
        # Renamed by an earlier run that was killed: the path must now hold the new content.
        current = root.open_regular(operation.path, refuse=_unsafe)
        if current is None or _hash_fd(current, root.name(operation.path)) != sha256:
            raise IntegrityError(
                f"{root.name(operation.path)}: its staged copy {staging.name(operation.staged)} is gone and it "
                "does not hold the new kit's content; reinstall the kit from a full kit"
            )
        return
    try:
        if _hash_fd(fd, staging.name(operation.staged), keep=True) != sha256:
            raise IntegrityError(
                f"{staging.name(operation.staged)}: staged copy of {operation.path} differs from the signed target"
            )
        with root.parent(operation.path, create=True, refuse=_unsafe) as found:
            assert found is not None
            parent_fd, name = found
            if root.kind(name, parent_fd) == "dir":
                raise _unsafe(f"{root.name(operation.path)}: is a directory, but the new kit needs a file here")
            try:
                os.rename(operation.staged, name, src_dir_fd=staging.fd, dst_dir_fd=parent_fd)
            except OSError as exc:
                raise host_error(exc, root.name(operation.path), "replace") from exc
            placed = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            held = os.fstat(fd)
            if (placed.st_dev, placed.st_ino) != (held.st_dev, held.st_ino):
                raise IntegrityError(f"{root.name(operation.path)}: staged file was swapped while kit renamed it")
            _sync_fd(parent_fd, root.name(operation.path))
    finally:
        os.close(fd)


def _finish(root: Directory) -> None:
    """Remove the journal first (so a kill leaves only discardable staging), then the staging directory."""
    staging = root.open_subdir(STAGING, refuse=_state)
    if staging is not None:
        with staging:
            staging.unlink(JOURNAL)
            staging.sync()
    faults.point("patch-dir-journal-removed")
    root.remove_tree(STAGING, refuse=_state)
    root.sync()


def _sync_fd(fd: int, where: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise host_error(exc, where, "sync") from exc


def _hash_fd(fd: int, where: str, *, keep: bool = False) -> str:
    """SHA-256 of an open file from its start; closes ``fd`` unless ``keep``."""
    digest = hashlib.sha256()
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
    except OSError as exc:
        raise host_error(exc, where, "read") from exc
    finally:
        if not keep:
            os.close(fd)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# planning and staging


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


# Where a staged file's bytes come from: installed base files with its content (any of them), or pieces: its
# group frame as the delta carries it, or for a large file its chunks one by one (from the delta, or from the
# installed base files that held them).
Source = tuple[str, ...] | tuple[_Piece, ...]


@dataclass(frozen=True)
class _Plan:
    operations: tuple[Operation, ...]
    sources: dict[str, tuple[FileEntry, Source]]  # staged name -> (target file, where its bytes come from)
    metadata: dict[str, str]  # staged name -> target metadata member
    reused: int
    removed: int


class _Planner:
    """Decide every step from the installed tree as it is, refusing trees kit cannot patch without guessing."""

    def __init__(self, root: Directory, delta: VerifiedDelta, installed: Metadata, base: Manifest) -> None:
        self.root = root
        self.delta = delta
        self.installed = installed
        self.base = base
        self.kinds: dict[str, str | None] = {}

    def kind(self, path: str) -> str | None:
        if path not in self.kinds:
            with self.root.parent(path, create=False, refuse=_unsafe) as found:
                self.kinds[path] = None if found is None else self.root.kind(found[1], found[0])
        return self.kinds[path]

    def plan(self) -> _Plan:
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
                raise _unsafe(f"{self.root.name(path)}: is a special file where the new kit has a regular file")
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
        return _Plan(tuple(operations), sources, metadata, reused, len(deletes))

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
        fd = self.root.open_regular(path, refuse=_unsafe)
        return fd is not None and _hash_fd(fd, self.root.name(path)) == sha256

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
            raise _unsafe(
                f"{self.root.name(prefix)}: is a {'symbolic link' if found == 'link' else 'file'} that is not part "
                f"of the kit, but the new kit needs a directory there (for {path})"
            )

    def _emptied(self, path: str, deleting: set[str]) -> list[str]:
        """``[path]`` when the directory there holds only directories and base files the target drops."""
        with self.root.parent(path, create=False, refuse=_unsafe) as found:
            assert found is not None
            top = Directory.open_below(found[0], found[1], self.root.name(path), refuse=_unsafe)
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
                    raise _unsafe(
                        f"{self.root.name(path)}: the new kit needs a file here, but this directory holds "
                        f"{relative}, which is not a file of the old kit; move it away"
                    )
        return [path]


class _Sources:
    """Where each target file's bytes can come from, decided from signed documents only (delta, target, base)."""

    def __init__(self, delta: VerifiedDelta, base: Manifest) -> None:
        self.delta = delta
        self.target = FrameMap(delta.target_manifest, what=f"{delta.path}: target {MANIFEST_JSON}")
        self.carried = FrameMap(delta.manifest, what=str(delta.path)).spans
        self.base = FrameMap(base, what=f"installed {MANIFEST_JSON}")
        self.donors: dict[tuple[str, int], list[str]] = {}
        for entry in base.files:
            self.donors.setdefault((entry.sha256, entry.size), []).append(entry.path)
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
        span = self.target.spans[item.path]
        if len(span.frames) == 1:
            carried = self.carried.get(f"{FRAMES_DIR}/{span.frames[0].sha256}")
            if carried is not None and carried.size == span.frames[0].size:
                return (_Piece(item.size, span=carried, skip=span.at + layout.BLOCK),)
        donors = tuple(self.donors.get((item.sha256, item.size), ()))
        if donors or len(span.frames) == 1:
            return donors
        # A large file changed in part: chunk by chunk, from the delta when it carries the chunk, else from the
        # installed file the base had it in. The whole is hashed against the target's digest when staged.
        pieces: list[_Piece] = []
        start = 0
        for frame in span.frames[1:]:
            length = min(frame.size, item.size - start)
            carried = self.carried.get(f"{FRAMES_DIR}/{frame.sha256}")
            if carried is not None and carried.size == frame.size:
                pieces.append(_Piece(length, span=carried))
            elif frame.sha256 in self.base_chunks:
                path, number = self.base_chunks[frame.sha256]
                pieces.append(_Piece(length, path=path, offset=number * layout.CHUNK))
            else:
                return ()  # neither has it: refused when staged
            start += length
        return tuple(pieces)


def _stage(root: Directory, staging: Directory, delta: VerifiedDelta, plan: _Plan, caps: Caps) -> int:
    """Write every staged file (fsynced) under ``staging``; returns how many payload files will be written."""
    for name, (item, source) in sorted(plan.sources.items()):
        if pieces := tuple(p for p in source if isinstance(p, _Piece)):
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
        fd = root.open_regular(donor, refuse=_unsafe)
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
            fd = root.open_regular(piece.path, refuse=_unsafe)
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
