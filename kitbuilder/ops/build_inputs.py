"""kit build's inputs: every file a spec's components name, with its kit path, checked before anything is read."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kitbuilder.core import paths
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


def _candidates(top: Path) -> Iterator[tuple[Path, str, os.stat_result | None]]:
    """Every entry under the directory ``top`` that could be an input, in ``os.walk`` order (per directory: its
    non-directories sorted, then its links to directories, then its subdirectories in sorted order; nothing
    below a link is visited), as (path, path relative to ``top``, its lstat when known).

    One ``scandir`` per directory and one lstat per entry (cached by the entry), no path arithmetic per file:
    a tree of many small files costs little more than listing it. Unreadable directories are skipped, as
    ``os.walk`` skips them.
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
                try:
                    info: os.stat_result | None = entry.stat(follow_symlinks=False)
                except OSError:
                    info = None
                yield Path(entry.path), prefix + entry.name, info
            elif entry.is_symlink():
                linked.append(entry)
            else:
                subdirectories.append((entry.path, f"{prefix}{entry.name}/"))
        for entry in linked:
            yield Path(entry.path), prefix + entry.name, None
        pending.extend(reversed(subdirectories))


def collect_inputs(spec: KitSpec) -> list[InputFile]:
    """Every input file with its kit path, sorted by kit path; UsageError on collisions or odd files."""
    found: list[InputFile] = []
    for component in spec.components:
        whole = component.source.is_file()
        if whole:
            candidates: Iterable[tuple[Path, str, os.stat_result | None]] = [
                (component.source, component.source.name, None)
            ]
        else:
            candidates = _candidates(component.source)
        for source, relative, known in candidates:
            info = known or source.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(
                    f"{spec.path}: {component.id}: {source} is not a regular file (symlinks and devices are not packed)"
                )
            if info.st_size >= USTAR_NUMBER_LIMIT:
                raise UsageError(f"{source}: {info.st_size} bytes; kit members are limited to 8 GiB (ustar)")
            kit_path = f"{component.dest}/{relative}"
            problem = paths.problem_with(kit_path)
            if problem:
                raise UsageError(f"{spec.path}: {component.id}: {source}: kit path {kit_path!r}: {problem}")
            found.append(InputFile(kit_path=kit_path, size=info.st_size, component=component, whole=whole))
    if not found and not spec.images:
        raise UsageError(f"{spec.path}: the components hold no files; a kit needs at least one payload file")
    for item in found:
        reserved = _reserved(item.kit_path)
        if reserved:
            raise UsageError(
                f"{spec.path}: {item.component.id}: {item.source} maps to kit path {item.kit_path}, "
                f"which {reserved}; set dest: to another directory"
            )
    found.sort(key=lambda f: f.kit_path)
    seen: dict[str, str] = {}
    for item in found:
        clash = paths.claim(item.kit_path, seen)
        if clash is not None:
            raise UsageError(
                f"{spec.path}: {item.source} maps to kit path {item.kit_path}, which clashes with another input: "
                f"{clash}; set dest: on one component"
            )
    return found
