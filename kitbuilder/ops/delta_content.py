"""Content deltas in delta kits (docs/delta.md, "Content deltas"): names, and what a delta build ships per frame.

A delta built with ``--delta-frames content`` (the default) does not ship a changed group frame whole. For each
target group frame the base lacks it ships, per member whose content the base lacks:

- ``delta/patches/<target sha256>/<base sha256>`` (role ``delta-patch``): the target content as one zstd frame
  compressed with the content of the base file at the same path as a raw-content dictionary
  (``archive.content_delta``), when that is smaller than the content compressed alone;
- else ``delta/files/<target sha256>`` (role ``delta-file``): the content itself.

Both names are signed (the delta's file list), so is the target's size and digest (the target's file list), and
``kit patch`` rebuilds the frame from them and the base (``frame_rebuild``). A frame is shipped verbatim
(``delta/frames/<sha256>``) when none of its members comes from the base or a patch, or when its members would
cost more than the frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kitbuilder.archive import content_delta, layout
from kitbuilder.archive.writer2 import compress_frame
from kitbuilder.core.filelist import FileTable, path_order
from kitbuilder.core.manifest import FileEntry, Manifest
from kitbuilder.errors import IntegrityError
from kitbuilder.ops.frame_reuse import BaseFrames, FrameMap

CONTENT = "content"
VERBATIM = "verbatim"
MODES = (CONTENT, VERBATIM)
PATCHES_DIR = "delta/patches"
FILES_DIR = "delta/files"
PATCH_ROLE = "delta-patch"
FILE_ROLE = "delta-file"
_PATCH_NAME = re.compile(r"delta/patches/([0-9a-f]{64})/([0-9a-f]{64})")
_FILE_NAME = re.compile(r"delta/files/([0-9a-f]{64})")


def patch_name(target_sha256: str, base_sha256: str) -> str:
    return f"{PATCHES_DIR}/{target_sha256}/{base_sha256}"


def file_name(target_sha256: str) -> str:
    return f"{FILES_DIR}/{target_sha256}"


@dataclass(frozen=True)
class Carried:
    """A target content a delta carries: as a patch against the base content ``base_sha256``, or whole (``None``).
    ``entry`` is the delta's signed file-list entry of the member that holds it."""

    entry: FileEntry
    base_sha256: str | None


def parse_name(path: str) -> tuple[str, str | None] | None:
    """(target sha256, base sha256 or None) for a ``delta/patches/…`` or ``delta/files/…`` name, else None."""
    if found := _PATCH_NAME.fullmatch(path):
        return found[1], found[2]
    if found := _FILE_NAME.fullmatch(path):
        return found[1], None
    return None


def carried_contents(manifest: Manifest, path: object) -> dict[str, Carried]:
    """The target contents a verified delta carries, by target SHA-256, from its signed file list.

    A ``delta/files/<sha256>`` member is the content itself, so its signed digest must be its name's, else the
    delta is refused [4]. Other names under ``delta/patches/`` or ``delta/files/`` are refused too: a member there
    that is not one kit writes would otherwise be silently ignored. So is any content member of a delta whose
    ``frames`` is not ``content`` (file mode rebuilds frames only for a content delta, so it would ignore them
    where directory mode used them), and a second member for a content another already carries (only the first
    would be used). Both modes call this when the delta is opened (``delta_open``), so they refuse alike.
    """
    label = None if manifest.delta is None else manifest.delta.frames
    found: dict[str, Carried] = {}
    for entry in manifest.files:
        if not entry.path.startswith((f"{PATCHES_DIR}/", f"{FILES_DIR}/")):
            continue
        if label != CONTENT:
            raise IntegrityError(
                f"{path}: {entry.path}: a content member in a delta whose manifest says frames: "
                f"{label or 'verbatim (by leaving it out)'}, which carries none; the delta is corrupt or was not "
                "made by kit: obtain it again"
            )
        parsed = parse_name(entry.path)
        if parsed is None:
            raise IntegrityError(
                f"{path}: {entry.path}: not a content member kit writes (delta/patches/<sha256>/<sha256> or "
                "delta/files/<sha256>); the delta is corrupt or was not made by kit: obtain it again"
            )
        target, base = parsed
        if layout.is_large(entry.size):
            raise IntegrityError(
                f"{path}: {entry.path}: {entry.size} bytes; a content member is under {layout.LARGE} bytes (it "
                "carries one small file); the delta is corrupt or was not made by kit: obtain it again"
            )
        if base is None and entry.sha256 != target:
            raise IntegrityError(
                f"{path}: {entry.path}: holds content of sha256 {entry.sha256[:16]}…, not the one its name gives; "
                "the delta is corrupt or was not made by kit: obtain it again"
            )
        if target in found:
            raise IntegrityError(
                f"{path}: {entry.path}: carries the content (sha256 {target[:16]}…) {found[target].entry.path} "
                "already carries; kit writes one member per content: the delta is corrupt or was not made by kit, "
                "obtain it again"
            )
        found[target] = Carried(entry, base)
    return found


@dataclass(frozen=True)
class Shipped:
    name: str
    data: bytes
    role: str


@dataclass(frozen=True)
class FilePlan:
    """What a delta build learns from the two signed file lists, in proportion to the change, not to the kits.

    ``lacking``: each target file (by number in the target's list) whose content (SHA-256 and size) the base has
    nowhere, with the base's small file at the same path (a patch's base content), or None. Every other target file
    in a frame the base lacks has its content in the base. ``added``/``changed``/``removed``: the summary's paths.
    """

    lacking: dict[int, FileEntry | None]
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def plan_files(base: Sequence[FileEntry], target: Sequence[FileEntry], fresh: set[int]) -> FilePlan:
    """The ``FilePlan`` of a delta from ``base`` (the base's signed files) to ``target`` (the new kit's);
    ``fresh``: the target's frame numbers whose digest the base lacks.

    One merge of the two lists in path order (``path_order``: each list is in archive order, a few sorted runs),
    then one pass over the base's digests for the few contents that differ from the same path's: what is held is
    the files whose content changed, never a set or map of every path or digest of either kit (a million of each;
    a few changed files spread over every group frame make every file of the kit a member of a shipped frame).
    Only the target's files in frames the base lacks, and large ones, can hold content the base lacks: a frame the
    base has decodes to the same bytes there.
    """
    old, new = _table(base), _table(target)
    removed: list[str] = []
    # The target files whose content the base may lack, with the base's file at the same path (or -1).
    differing: list[tuple[int, int]] = []
    olds, news = path_order(old.paths), path_order(new.paths)
    o, n = next(olds, None), next(news, None)
    while o is not None or n is not None:
        if n is None or (o is not None and old.paths[o] < new.paths[n]):
            assert o is not None
            removed.append(old.paths[o])
            o = next(olds, None)
            continue
        at = o if o is not None and old.paths[o] == new.paths[n] else -1
        may_lack = new.frame(n) in fresh or layout.is_large(new.size(n))
        if may_lack and (at < 0 or old.size(at) != new.size(n) or old.sha256(at) != new.sha256(n)):
            differing.append((n, at))
        if at >= 0:
            o = next(olds, None)
        n = next(news, None)
    wanted = {(new.sha256(n), new.size(n)) for n, _ in differing}
    in_base: set[tuple[str, int]] = set()
    if wanted:
        sizes = {size for _, size in wanted}
        for number in range(len(old)):
            # The size first: an int compare, where the digest is a string made per file.
            if old.size(number) in sizes and (content := (old.sha256(number), old.size(number))) in wanted:
                in_base.add(content)
    lacking: dict[int, FileEntry | None] = {}
    added: list[str] = []
    changed: list[str] = []
    for n, o in differing:
        if (new.sha256(n), new.size(n)) in in_base:
            continue
        (changed if o >= 0 else added).append(new.paths[n])
        lacking[n] = old[o] if o >= 0 and not layout.is_large(old.size(o)) else None
    return FilePlan(lacking, tuple(sorted(added)), tuple(sorted(changed)), tuple(removed))


def _table(files: Sequence[FileEntry]) -> FileTable:
    return files if isinstance(files, FileTable) else FileTable.of(files)


class ContentShipper:
    """Decides, per target frame the base lacks, whether the delta carries its changed contents or the frame."""

    def __init__(self, base: BaseFrames, target: FrameMap, plan: FilePlan, level: int) -> None:
        self.base = base
        self.target = target
        self.level = level
        # Which members of the shipped frames (every one a frame the base lacks) the base lacks, from the merge of the
        # two lists (``plan_files``): a map of the changed files, not of every member of a shipped frame (that can be
        # every file of the kit).
        self.lacking = plan.lacking
        self.carried: set[str] = set()  # target contents this delta already carries
        self.patches = 0
        self.files = 0
        self.rebuilt = 0

    def members_for(self, number: int, decoded: bytes) -> list[Shipped] | None:
        """The members that carry target frame ``number`` (its decoded bytes), or None to ship the frame whole."""
        role = self.target.roles[number]
        if role is None or role.kind != "group":
            return None
        out: list[Shipped] = []
        cost = 0
        from_base = False
        carried_now: set[str] = set()
        for position in role.numbers:
            entry = role.held[position]
            if position not in self.lacking or entry.sha256 in self.carried or entry.sha256 in carried_now:
                from_base = True
                continue
            start = entry.at + layout.BLOCK
            content = decoded[start : start + entry.size]
            plain = len(compress_frame(content, self.level))
            item = Shipped(file_name(entry.sha256), content, FILE_ROLE)
            weight = plain
            base = self.lacking[position]
            if base is not None and content_delta.usable(base.size, entry.size):
                patch = content_delta.encode(content, self.base.content(base))
                if len(patch) < plain:
                    item, weight = Shipped(patch_name(entry.sha256, base.sha256), patch, PATCH_ROLE), len(patch)
                    from_base = True
            out.append(item)
            cost += weight + layout.BLOCK
            carried_now.add(entry.sha256)
        if not from_base or cost >= self.target.frames[number].length:
            return None
        self.carried |= carried_now
        self.rebuilt += 1
        self.patches += sum(item.role == PATCH_ROLE for item in out)
        self.files += sum(item.role == FILE_ROLE for item in out)
        return out
