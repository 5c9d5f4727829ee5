"""kit build's inputs: every file a spec's components name, with its kit path, checked before anything is read."""

from __future__ import annotations

import collections
import functools
import os
import stat
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from kitbuilder import inputfile
from kitbuilder.archive import layout
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
    path (the string the writer's table and the manifest then share), its size and its component's number.
    """

    __slots__ = ("_components", "_kinds", "_sizes", "kit_paths")

    def __init__(self, components: Sequence[tuple[ComponentSpec, bool]] = ()) -> None:
        self.kit_paths: list[str] = []
        self._sizes = array("q")
        self._kinds = array("I")  # the number of (component, whole) in ``_components``
        self._components = list(components)

    def append(self, kit_path: str, size: int, kind: int) -> None:
        self.kit_paths.append(kit_path)
        self._sizes.append(size)
        self._kinds.append(kind)

    def sorted(self) -> InputList:
        """These inputs in kit path order (equal paths in their order here)."""
        ordered = InputList(self._components)
        for number in path_order(self.kit_paths):
            ordered.append(self.kit_paths[number], self._sizes[number], self._kinds[number])
        return ordered

    def clear(self) -> None:
        self.kit_paths = []
        self._sizes = array("q")
        self._kinds = array("I")

    def total_size(self) -> int:
        return sum(self._sizes)

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
            found.append(kit_path, info.st_size, kind)
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
    """An input that is not the regular file ``collect_inputs`` found (replaced by a link, a FIFO, a directory)."""
    return UsageError(f"{item.source}: is no longer the regular file it was when the build started; rerun the build")


# Small inputs are read in batches (one task for the reader thread per batch, not per file).
_BATCH_FILES = 64
_BATCH_BYTES = 1 << 20

_Read = bytes | OSError | UsageError


class ReadAhead:
    """The inputs in order, each small one (that joins a group frame) read whole ahead on a reader thread.

    Iterating gives ``(item, read)``: ``read()`` returns a small input's bytes (one byte past its listed size
    when it grew, fewer when it shrank: the writer refuses either) or raises what reading it raised, OSError or
    UsageError (``changed_input``); ``read`` is None for a large input, which the caller streams itself. At
    most about ``max_bytes`` of inputs (and ``max_files`` files) are held ahead, so memory stays flat. Reading
    one small file is one open, one fstat, its bytes, one close (``inputfile.read_regular``, links not followed);
    the reader thread takes them in batches of up to 64 files or 1 MiB.
    """

    def __init__(self, inputs: Sequence[InputFile], *, max_bytes: int = 8 << 20, max_files: int = 1024) -> None:
        self._inputs = inputs
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-read")
        self._batches: collections.deque[Future[list[_Read]] | None] = collections.deque()  # None: a large input
        self._scheduled = 0  # inputs scheduled so far
        self._held = 0  # bytes of small inputs scheduled and not yet handed out

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[InputFile, Callable[[], bytes] | None]]:
        inputs = self._inputs
        results: list[_Read] = []
        taken = 0
        for number, item in enumerate(inputs):
            while self._scheduled < len(inputs) and (
                self._scheduled == number
                or (
                    self._held + inputs[self._scheduled].size <= self._max_bytes
                    and self._scheduled - number < self._max_files
                )
            ):
                self._schedule()
            if layout.is_large(item.size):
                self._batches.popleft()  # its place holder: the batches before it are all handed out
                yield item, None
                continue
            if taken == len(results):
                batch = self._batches.popleft()
                assert batch is not None
                results, taken = batch.result(), 0
            result = results[taken]
            results[taken] = b""  # handed out: the writer holds it from here
            taken += 1
            self._held -= item.size
            yield item, functools.partial(_outcome, result)

    def _schedule(self) -> None:
        """Schedule the next large input (a place holder) or the next batch of small ones."""
        inputs, first = self._inputs, self._inputs[self._scheduled]
        if layout.is_large(first.size):
            self._batches.append(None)
            self._scheduled += 1
            return
        batch, size = [first], first.size
        end = self._scheduled + 1
        while end < len(inputs) and len(batch) < _BATCH_FILES and size < _BATCH_BYTES:
            upcoming = inputs[end]
            if layout.is_large(upcoming.size) or self._held + size + upcoming.size > self._max_bytes:
                break
            batch.append(upcoming)
            size += upcoming.size
            end += 1
        self._batches.append(self._reader.submit(_read_batch, batch))
        self._scheduled = end
        self._held += size


def _outcome(result: _Read) -> bytes:
    if isinstance(result, bytes):
        return result
    raise result


def _read_batch(batch: list[InputFile]) -> list[_Read]:
    """Each input's bytes, or the error reading it raised (raised in its turn, when the caller reaches it)."""
    out: list[_Read] = []
    for item in batch:
        try:
            out.append(_read_small(item))
        except (OSError, UsageError) as exc:
            out.append(exc)
    return out


def _read_small(item: InputFile) -> bytes:
    try:
        return inputfile.read_regular(item.source, item.size + 1, follow_links=False)
    except inputfile.NotRegularFile as exc:
        raise changed_input(item) from exc
