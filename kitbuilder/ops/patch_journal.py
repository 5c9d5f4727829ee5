"""The journal of a directory patch (``kit patch DIR --in-place``): what a committed patch will do, checked
before a single step runs, and the idempotent steps themselves.

The journal lives in ``.kit-patch/`` (a reserved name: no kit can ship it) beside ``base-manifest.json``, the
installed manifest the patch started from. After a kill, a journal is acted on only when it names this
delta's base and target, is no larger than they imply, and lists only steps kit would plan for them; each
step (delete, remove a directory that must become a file, rename a staged file) reaches the same state
however often it is repeated. ``patch_dir`` drives it; ``patch_staging`` plans and writes the staged files.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from kitbuilder import faults
from kitbuilder.archive.reader import Caps
from kitbuilder.core import filelist, jsonio, paths
from kitbuilder.core.manifest import MANIFEST_JSON, MAX_ATTESTATIONS, Manifest, is_optional_metadata
from kitbuilder.errors import FormatError, IntegrityError, KitError, UsageError
from kitbuilder.ops.confined import CHUNK, Directory, host_error, read_bounded, remove_directories
from kitbuilder.ops.delta_open import VerifiedDelta

STAGING = ".kit-patch"
JOURNAL = "journal.json"
JOURNAL_TEMP = "journal.part"
BASE_MANIFEST = "base-manifest.json"
# Format 2: the base's signed file list beside its manifest (which names it by digest), for the files it lists.
BASE_FILES = "base-files.jsonl"
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


def unsafe(message: str) -> KitError:
    """An installed tree that is not what a kit path promises (a link, a file where a directory must be)."""
    return IntegrityError(f"{message}; reinstall the kit from a full kit, or fix the directory and rerun")


def state_error(message: str) -> KitError:
    """Something planted where kit keeps its own state (.kit-patch)."""
    return UsageError(f"{message}; remove it and rerun")


@dataclass(frozen=True)
class Targets:
    """What the verified target says each path must hold, and what may be deleted from the base."""

    wanted: dict[str, str]

    def __init__(self, delta: VerifiedDelta) -> None:
        wanted = {f.path: f.sha256 for f in delta.target_manifest.files}
        wanted.update({name: hashlib.sha256(data).hexdigest() for name, data in delta.target.members.items()})
        object.__setattr__(self, "wanted", wanted)


def recover(root: Directory, delta: VerifiedDelta, caps: Caps) -> bool:
    """Finish a committed patch of this base into this target (True), or discard uncommitted staging (False)."""
    staging = root.open_subdir(STAGING, refuse=state_error)
    if staging is None:
        return False
    targets = Targets(delta)
    with staging:
        kind = staging.kind(JOURNAL)
        if kind is None:
            journal = None
        elif kind != "file":
            raise state_error(f"{staging.name(JOURNAL)}: is not a file kit wrote (a link or a directory?)")
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
        root.remove_tree(STAGING, refuse=state_error)
        root.sync()
        return False
    carry_out(root, journal, targets)
    finish(root)
    return True


def _finished(root: Directory, journal: Journal, delta: VerifiedDelta) -> bool:
    """True when another delta's journal has nothing left to do: the installed manifest.json is its target's.

    The rename of manifest.json is a journal's last step, so every step before it is done and only the
    journal's removal was interrupted. Its staging is then discarded like uncommitted staging, and the patch
    proceeds from the installed kit, which is verified as always; the next release's delta is not blocked.
    """
    if (journal.base_sha256, journal.target_sha256) == (delta.base_sha256, delta.target_sha256):
        return False  # this delta's own journal: finish it (its steps are all idempotent)
    fd = root.open_regular(MANIFEST_JSON, refuse=state_error)
    return fd is not None and hash_fd(fd, root.name(MANIFEST_JSON)) == journal.target_sha256


def _read_base_manifest(staging: Directory, delta: VerifiedDelta, caps: Caps) -> Manifest | None:
    """The base manifest kept beside the journal, parsed only when it is the one the delta signs as its base.

    It is hashed in pieces first: a planted one (any size up to the metadata cap) is never held in
    memory, parsed, or allowed to bound the journal. None when it is not this delta's base.
    """
    what = staging.name(BASE_MANIFEST)
    fd = staging.open_regular(BASE_MANIFEST, refuse=state_error)
    if fd is None:
        raise _foreign_journal(FormatError(f"{what}: missing or not a regular file"), staging.shown)
    try:
        if os.fstat(fd).st_size > caps.max_metadata or hash_fd(fd, what, keep=True) != delta.base_sha256:
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
        manifest = Manifest.from_bytes(data, what=what)
        return _with_base_files(staging, manifest)
    except FormatError as exc:
        raise _foreign_journal(exc, staging.shown) from exc


def _with_base_files(staging: Directory, manifest: Manifest) -> Manifest:
    """Format 2: ``manifest`` (the delta's base, by digest) with the files of its file list kept beside it, which
    must be exactly the list it signs (size and SHA-256); FormatError otherwise."""
    ref = manifest.file_list
    if ref is None:
        return manifest
    what = staging.name(BASE_FILES)
    fd = staging.open_regular(BASE_FILES, refuse=state_error)
    if fd is None:
        raise FormatError(f"{what}: missing or not a regular file")
    try:
        data = read_bounded(fd, ref.size, what=what, too_big=FormatError)
    finally:
        os.close(fd)
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise FormatError(f"{what}: not the file list {BASE_MANIFEST} signs")
    frame_sizes = [f.size for f in manifest.frames]
    return manifest.with_files(filelist.parse(data, count=ref.count, frame_sizes=frame_sizes, what=what))


def _read_staged(staging: Directory, name: str, limit: int) -> bytes:
    fd = staging.open_regular(name, refuse=state_error)
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


def _check_journal(journal: Journal, delta: VerifiedDelta, targets: Targets, base: Manifest | None, what: str) -> None:
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


def carry_out(root: Directory, journal: Journal, targets: Targets) -> None:
    """Every operation, in order; each one reaches the same end state however often it is repeated."""
    staging = root.open_subdir(STAGING, refuse=state_error)
    if staging is None:
        raise state_error(f"{root.name(STAGING)}: vanished while kit was using it")
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
    with root.parent(path, create=False, refuse=unsafe) as found:
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
    with root.parent(path, create=False, refuse=unsafe) as found:
        if found is None:
            return
        parent_fd, name = found
        if root.kind(name, parent_fd) != "dir":
            return  # gone, or already the file that replaces it

        def foreign(message: str) -> KitError:
            return unsafe(
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
    fd = staging.open_regular(operation.staged, refuse=state_error)
    if fd is None:
        # Renamed by an earlier run that was killed: the path must now hold the new content.
        current = root.open_regular(operation.path, refuse=unsafe)
        if current is None or hash_fd(current, root.name(operation.path)) != sha256:
            raise IntegrityError(
                f"{root.name(operation.path)}: its staged copy {staging.name(operation.staged)} is gone and it "
                "does not hold the new kit's content; reinstall the kit from a full kit"
            )
        return
    try:
        if hash_fd(fd, staging.name(operation.staged), keep=True) != sha256:
            raise IntegrityError(
                f"{staging.name(operation.staged)}: staged copy of {operation.path} differs from the signed target"
            )
        with root.parent(operation.path, create=True, refuse=unsafe) as found:
            assert found is not None
            parent_fd, name = found
            if root.kind(name, parent_fd) == "dir":
                raise unsafe(f"{root.name(operation.path)}: is a directory, but the new kit needs a file here")
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


def finish(root: Directory) -> None:
    """Remove the journal first (so a kill leaves only discardable staging), then the staging directory."""
    staging = root.open_subdir(STAGING, refuse=state_error)
    if staging is not None:
        with staging:
            staging.unlink(JOURNAL)
            staging.sync()
    faults.point("patch-dir-journal-removed")
    root.remove_tree(STAGING, refuse=state_error)
    root.sync()


def _sync_fd(fd: int, where: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise host_error(exc, where, "sync") from exc


def hash_fd(fd: int, where: str, *, keep: bool = False) -> str:
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
