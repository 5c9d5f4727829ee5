"""kit build: spec + inputs + keys → one signed, reproducible .kit.tar.zst."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kitbuilder import __version__
from kitbuilder.archive.writer import KitWriter
from kitbuilder.atomic import atomic_output
from kitbuilder.core import checksums, paths, timefmt
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    Component,
    FileEntry,
    KitInfo,
    Manifest,
)
from kitbuilder.core.spec import ComponentSpec, KitSpec, load_spec
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.errors import UsageError
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope

if TYPE_CHECKING:
    from kitbuilder.ops.delta import FrameReuse

# ustar's 12-byte octal fields hold values below 8**11: files up to 8 GiB, times before year 4147.
USTAR_NUMBER_LIMIT = 8**11


@dataclass(frozen=True)
class BuildOptions:
    level: int = 3
    # 0 = single-threaded (the default: as fast here, a quarter of the memory); -1 = one worker per CPU.
    # Any value >= 1 gives the same bytes; 0 gives different (single-threaded) bytes.
    threads: int = 0
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class InputFile:
    kit_path: str
    source: Path
    size: int
    component: ComponentSpec


@dataclass(frozen=True)
class BuildResult:
    output: Path
    manifest: Manifest
    signers: tuple[str, ...]
    kit_size: int


def source_date_epoch_from_env() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) >= USTAR_NUMBER_LIMIT:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r}: expected a non-negative integer (seconds since 1970)")
    return int(value)


def collect_inputs(spec: KitSpec) -> list[InputFile]:
    """Every input file with its kit path, sorted by kit path; UsageError on collisions or odd files."""
    found: list[InputFile] = []
    for component in spec.components:
        if component.source.is_file():
            candidates = [(component.source, component.source.name)]
        else:
            candidates = []
            for root, dirs, files in os.walk(component.source):
                dirs.sort()
                for name in sorted(files) + [d for d in dirs if Path(root, d).is_symlink()]:
                    full = Path(root, name)
                    candidates.append((full, full.relative_to(component.source).as_posix()))
        for source, relative in candidates:
            info = source.lstat()
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
            found.append(InputFile(kit_path=kit_path, source=source, size=info.st_size, component=component))
    if not found:
        raise UsageError(f"{spec.path}: the components hold no files; a kit needs at least one payload file")
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


def build_kit(
    spec_path: Path,
    *,
    keys: list[PrivateKey],
    output: Path,
    options: BuildOptions,
    on_bytes: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    reuse: FrameReuse | None = None,
) -> BuildResult:
    """Build and sign a kit; the output appears only when complete.

    With ``reuse`` (a verified base kit), files whose content the base already holds
    are hashed, then their compressed data frames are copied from the base verbatim.
    """
    if not keys:
        raise UsageError("kit build needs at least one --key")
    if len({k.keyid for k in keys}) != len(keys):
        raise UsageError("--key: the same key is given twice")
    if not 1 <= options.level <= 19:
        raise UsageError(f"--level {options.level}: expected 1..19")
    spec = load_spec(spec_path)
    inputs = collect_inputs(spec)
    if on_start is not None:
        on_start(sum(i.size for i in inputs))
    epoch = options.source_date_epoch
    kit_info = KitInfo(
        name=spec.name,
        version=spec.version,
        sequence=spec.sequence,
        expires=timefmt.format_utc(spec.expires),
        product=spec.product,
        channel=spec.channel,
        description=spec.description,
        created=timefmt.format_utc(timefmt.from_epoch(epoch)) if epoch is not None else None,
    )
    build_info = {
        "tool": f"kitbuilder {__version__}",
        "compression": {"algorithm": "zstd", "level": options.level, "multithreaded": options.threads != 0},
        "mtime": epoch or 0,
    }
    components = tuple(
        Component(id=c.id, role=c.role, phase=c.phase, subject=c.subject, options=c.options) for c in spec.components
    )
    if reuse is not None:
        reuse.check_compatible(build_info)
    with atomic_output(output) as out:
        writer = KitWriter(out, level=options.level, threads=options.threads, mtime=epoch or 0)
        files: list[FileEntry] = []
        for item in inputs:
            try:
                entry = None
                if reuse is not None:
                    entry = reuse.copy_if_known(writer, item.kit_path, item.source, item.size)
                    if entry is not None and on_bytes is not None:
                        on_bytes(item.size)
                if entry is None:
                    with item.source.open("rb") as source:
                        entry = writer.add_stream(item.kit_path, source, item.size, on_bytes=on_bytes)
            except OSError as exc:
                raise UsageError(f"{item.source}: cannot read ({exc.strerror})") from exc
            files.append(
                FileEntry(
                    path=entry.path,
                    size=entry.size,
                    sha256=entry.sha256,
                    role=item.component.role,
                    component=item.component.id,
                    offset=entry.offset,
                    length=entry.length,
                    frame_sha256=entry.frame_sha256,
                )
            )
        manifest = Manifest(
            kit=kit_info, build=build_info, components=components, files=tuple(files), checks=spec.checks
        )
        seal(writer, manifest, keys)
        kit_size = writer.offset
    return BuildResult(output=output, manifest=manifest, signers=tuple(k.keyid for k in keys), kit_size=kit_size)


def seal(writer: KitWriter, manifest: Manifest, keys: list[PrivateKey]) -> None:
    """Write the metadata members (SHA256SUMS, its signature, manifest, DSSE envelope) and the index."""
    files = manifest.files
    sums = checksums.render((f.path, f.sha256) for f in files)
    sums_entry = writer.add_bytes(SHA256SUMS, sums)
    writer.add_bytes(SHA256SUMS_SIG, keys[0].sign(sums))
    writer.add_bytes(MANIFEST_JSON, manifest.to_bytes())
    statement = Statement(
        subjects=tuple(Subject(name=f.path, sha256=f.sha256) for f in files)
        + (Subject(name=SHA256SUMS, sha256=sums_entry.sha256),),
        predicate_type=MANIFEST_PREDICATE_TYPE,
        predicate=manifest.to_json(),
    )
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), keys)
    writer.add_bytes(MANIFEST_DSSE, envelope.to_bytes())
    writer.finish()
