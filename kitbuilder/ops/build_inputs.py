"""kit build's inputs: every file a spec's components name, with its kit path, checked before anything is read."""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

from kitbuilder import inputfile
from kitbuilder.core import paths
from kitbuilder.core.filelist import path_order
from kitbuilder.core.manifest import ATTESTATIONS_DIR, IMAGES_DIR, METADATA_FILES, is_optional_metadata
from kitbuilder.core.sbom import KIT_SBOM_PATH
from kitbuilder.core.spec import ComponentSpec, KitSpec
from kitbuilder.errors import UsageError

# ustar's 12-byte octal fields hold values below 8**11: files up to 8 GiB, times before year 4147.
USTAR_NUMBER_LIMIT = 8**11


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file. Its source path is made on use from the component and the kit path (``source``): a ``Path``
    per file costs several hundred bytes, which a build of a million files cannot hold side by side."""

    kit_path: str
    size: int
    component: ComponentSpec
    whole: bool = False  # the component's source is this one file (else a directory holding it)

    @property
    def source(self) -> Path:
        top = self.component.source
        if self.whole:
            return top
        return Path(f"{top}/{self.kit_path[len(self.component.dest) + 1 :]}")


def source_date_epoch_from_env() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) >= USTAR_NUMBER_LIMIT:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r}: expected a non-negative integer (seconds since 1970)")
    return int(value)


def _reserved(kit_path: str) -> str | None:
    """Why an input may not use ``kit_path``: kit build writes that path itself."""
    if kit_path == KIT_SBOM_PATH:
        return "is the kit's own SBOM"
    top = kit_path.split("/", 1)[0]
    if top in (IMAGES_DIR, ATTESTATIONS_DIR, "delta"):
        return f"is under {top}/, which kit build fills itself"
    if kit_path in METADATA_FILES or is_optional_metadata(kit_path):
        return "is a kit metadata member"
    return None


def _candidates(top: Path) -> Iterator[tuple[str, str, os.DirEntry[str]]]:
    """Every entry under the directory ``top`` that could be an input, in ``os.walk`` order (per directory: its
    non-directories sorted, then its links to directories, then its subdirectories in sorted order; nothing
    below a link is visited), as (path, path relative to ``top``, its directory entry).

    One ``scandir`` per directory, no path arithmetic per file: the entry caches its type (from the directory
    listing) and its lstat, so a tree of many small files costs little more than listing it. Unreadable
    directories are skipped, as ``os.walk`` skips them.
    """
    pending: list[tuple[str, str]] = [(str(top), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue
        subdirectories: list[tuple[str, str]] = []
        linked: list[os.DirEntry[str]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                yield entry.path, prefix + entry.name, entry
            elif entry.is_symlink():
                linked.append(entry)
            else:
                subdirectories.append((entry.path, f"{prefix}{entry.name}/"))
        for entry in linked:
            yield entry.path, prefix + entry.name, entry
        pending.extend(reversed(subdirectories))


def files_under(top: Path) -> frozenset[str]:
    """The files under the directory ``top`` (``/``-separated, relative), as ``rglob("*")`` + ``is_file()`` finds
    them (links to files included, nothing below a link to a directory), from the same one-scandir-per-directory
    walk as the inputs: no Path object per entry, and no stat but for links (the listing gives the type)."""

    def is_file(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_file()  # a link is followed, as rglob's is_file() does
        except OSError:
            return False

    return frozenset(relative for _, relative, entry in _candidates(top) if is_file(entry))


def _lstat(entry: os.DirEntry[str] | None) -> os.stat_result | None:
    if entry is None:
        return None
    try:
        return entry.stat(follow_symlinks=False)
    except OSError:
        return None  # looked at again by path, which names the error


class InputList(Sequence[InputFile]):
    """The inputs of a build, in kit path order, stored by column: each ``InputFile`` is made on access.

    A million inputs held as objects cost a few hundred bytes each beside the writer's table; here each is its kit
    path (the string the writer's table and the manifest then share), its size, its component's number and the
    identity (st_dev, st_ino) of the file the scan found: a read proves it reads that file (``identity``), not one a
    directory swapped for a link above it, or a hard link made under its name, puts there (16 bytes a file).
    """

    __slots__ = ("_components", "_devices", "_inodes", "_kinds", "_sizes", "kit_paths")

    def __init__(self, components: Sequence[tuple[ComponentSpec, bool]] = ()) -> None:
        self.kit_paths: list[str] = []
        self._sizes = array("q")
        self._kinds = array("I")  # the number of (component, whole) in ``_components``
        self._devices = array("Q")
        self._inodes = array("Q")
        self._components = list(components)

    def append(self, kit_path: str, size: int, kind: int, identity: tuple[int, int]) -> None:
        self.kit_paths.append(kit_path)
        self._sizes.append(size)
        self._kinds.append(kind)
        self._devices.append(identity[0])
        self._inodes.append(identity[1])

    def sorted(self) -> InputList:
        """These inputs in kit path order (equal paths in their order here)."""
        ordered = InputList(self._components)
        for number in path_order(self.kit_paths):
            ordered.append(self.kit_paths[number], self._sizes[number], self._kinds[number], self.identity(number))
        return ordered

    def clear(self) -> None:
        self.kit_paths = []
        self._sizes = array("q")
        self._kinds = array("I")
        self._devices = array("Q")
        self._inodes = array("Q")

    def identity(self, number: int) -> tuple[int, int]:
        """(st_dev, st_ino) of the file the scan found for input ``number``."""
        return self._devices[number], self._inodes[number]

    def total_size(self) -> int:
        return sum(self._sizes)

    def size(self, number: int) -> int:
        return self._sizes[number]

    def reader(self) -> InputReader:
        """Reads these inputs by number, on any thread, also after ``clear``."""
        return InputReader(self._kinds, self._devices, self._inodes, self._components)

    def roles(self) -> list[tuple[str, str]]:
        """Each input's (role, component id), in order: one shared pair per component."""
        pairs = [(component.role, component.id) for component, _ in self._components]
        return [pairs[kind] for kind in self._kinds]

    def __len__(self) -> int:
        return len(self.kit_paths)

    @overload
    def __getitem__(self, number: int) -> InputFile: ...
    @overload
    def __getitem__(self, number: slice) -> list[InputFile]: ...
    def __getitem__(self, number: int | slice) -> InputFile | list[InputFile]:
        if isinstance(number, slice):
            return [self[n] for n in range(*number.indices(len(self)))]
        kit_path = self.kit_paths[number]  # IndexError past the end
        component, whole = self._components[self._kinds[number]]
        return InputFile(kit_path=kit_path, size=self._sizes[number], component=component, whole=whole)


def collect_inputs(spec: KitSpec) -> InputList:
    """Every input file with its kit path, sorted by kit path; UsageError on collisions or odd files."""
    kinds = [(component, component.source.is_file()) for component in spec.components]
    found = InputList(kinds)
    for kind, (component, whole) in enumerate(kinds):
        if whole:
            candidates: Iterable[tuple[str, str, os.DirEntry[str] | None]] = [
                (str(component.source), component.source.name, None)
            ]
        else:
            candidates = _candidates(component.source)
        for name, relative, entry in candidates:
            info = _lstat(entry) or Path(name).lstat()
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(
                    f"{spec.path}: {component.id}: {name} is not a regular file (symlinks and devices are not packed)"
                )
            if info.st_size >= USTAR_NUMBER_LIMIT:
                raise UsageError(f"{name}: {info.st_size} bytes; kit members are limited to 8 GiB (ustar)")
            kit_path = f"{component.dest}/{relative}"
            problem = paths.problem_with(kit_path)
            if problem:
                raise UsageError(f"{spec.path}: {component.id}: {name}: kit path {kit_path!r}: {problem}")
            found.append(kit_path, info.st_size, kind, (info.st_dev, info.st_ino))
    if not found and not spec.images:
        raise UsageError(f"{spec.path}: the components hold no files; a kit needs at least one payload file")
    for number, kit_path in enumerate(found.kit_paths):
        reserved = _reserved(kit_path)
        if reserved:
            item = found[number]
            raise UsageError(
                f"{spec.path}: {item.component.id}: {item.source} maps to kit path {item.kit_path}, "
                f"which {reserved}; set dest: to another directory"
            )
    found = found.sorted()
    seen: dict[str, str] = {}
    for number, kit_path in enumerate(found.kit_paths):
        clash = paths.claim(kit_path, seen)
        if clash is not None:
            raise UsageError(
                f"{spec.path}: {found[number].source} maps to kit path {kit_path}, which clashes with another input: "
                f"{clash}; set dest: on one component"
            )
    return found


def changed_input(item: InputFile) -> UsageError:
    """An input that is not the regular file ``collect_inputs`` found (replaced by a link, a FIFO, a directory, another
    file: a directory above it swapped for a link, a hard link made under its name)."""
    return UsageError(f"{item.source}: is no longer the regular file it was when the build started; rerun the build")


def open_input(item: InputFile, identity: tuple[int, int]) -> BinaryIO:
    """The input file ``collect_inputs`` found, opened without following a symlink or blocking on a FIFO.

    Between that scan (lstat) and this open the entry may have been replaced: a symlink to a file outside the source
    tree would be packed, a FIFO would hang the build, a directory above it swapped for a link, or a hard link made
    under its name, would pack a file from elsewhere. So the open file must be the one scanned: its (st_dev, st_ino).
    """
    try:
        return inputfile.open_regular(item.source, follow_links=False, identity=identity)
    except inputfile.NotRegularFile as exc:
        raise changed_input(item) from exc
    except OSError as exc:
        raise UsageError(f"{item.source}: cannot read ({exc.strerror})") from exc


class InputReader:
    """Reads a small input of an ``InputList`` by its number, on any thread (``framejobs.Load``): the writer's group
    job calls it on a worker, so many small files are opened, read and hashed on every core, with no object per file.

    Holds the list's columns as they were (``InputList.clear`` makes new ones): the jobs still in flight read on.
    Reading one input is one open (links not followed, never blocking on a FIFO), one fstat proving it the very file
    the scan found (its st_dev and st_ino: a link swapped in above the last component is followed by the open), its
    bytes and one more (so the job sees it grew), one close (``inputfile.read_regular``). What is no longer the
    regular file found by ``collect_inputs`` is ``changed_input``; a read error is a UsageError naming the file.
    """

    __slots__ = ("_components", "_devices", "_inodes", "_kinds")

    def __init__(
        self,
        kinds: array[int],
        devices: array[int],
        inodes: array[int],
        components: Sequence[tuple[ComponentSpec, bool]],
    ) -> None:
        self._kinds = kinds
        self._devices = devices
        self._inodes = inodes
        # Per component: its source as a string, where its part of a kit path starts, the component, whole or not.
        self._components = [(str(c.source), len(c.dest) + 1, c, whole) for c, whole in components]

    def __call__(self, key: int, path: str, size: int) -> bytes:
        top, cut, component, whole = self._components[self._kinds[key]]
        try:
            source = top if whole else f"{top}/{path[cut:]}"
            identity = (self._devices[key], self._inodes[key])
            return inputfile.read_regular(source, size + 1, follow_links=False, identity=identity)
        except inputfile.NotRegularFile as exc:
            raise changed_input(InputFile(path, size, component, whole)) from exc
        except OSError as exc:
            raise UsageError(f"{InputFile(path, size, component, whole).source}: cannot read ({exc.strerror})") from exc
