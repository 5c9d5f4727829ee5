"""kit build: spec + inputs + keys → one signed, reproducible .kit.tar.zst."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from kitbuilder import __version__, faults
from kitbuilder.archive import layout
from kitbuilder.archive.hashing import HashWorker
from kitbuilder.archive.pool import usable_cores
from kitbuilder.archive.writer2 import FrameReuse, KitWriter2
from kitbuilder.atomic import AtomicFile, check_target, commit_together, os_error
from kitbuilder.core import jsonio, timefmt
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope
from kitbuilder.core.filelist import FileTable
from kitbuilder.core.manifest import (
    IMAGES_COMPONENT,
    KIT_SBOM_COMPONENT,
    MANIFEST_JSON,
    SHA256SUMS,
    SIGSTORE_BUNDLE,
    Component,
    KitInfo,
    Manifest,
)
from kitbuilder.core.manifest_parts import BuildInfo, Compression
from kitbuilder.core.provenance import (
    DETACHED_SUFFIX,
    PROVENANCE_MEMBER,
    PROVENANCE_PREDICATE_TYPE,
    Dependency,
    Provenance,
    builder_from_environment,
)
from kitbuilder.core.sbom import (
    KIT_SBOM_PATH,
    Inventory,
    KitComponent,
    SbomError,
    SbomImage,
    ShippedSbom,
    check_sbom,
    component_inventories,
    render_kit_sbom,
)
from kitbuilder.core.spec import KitSpec
from kitbuilder.core.statement import Statement, Subject
from kitbuilder.errors import IntegrityError, UsageError

# Split out of this module; re-exported here, where callers have always found them.
from kitbuilder.ops.build_inputs import USTAR_NUMBER_LIMIT as USTAR_NUMBER_LIMIT
from kitbuilder.ops.build_inputs import InputFile as InputFile
from kitbuilder.ops.build_inputs import InputList, open_input
from kitbuilder.ops.build_inputs import collect_inputs as collect_inputs
from kitbuilder.ops.build_inputs import source_date_epoch_from_env as source_date_epoch_from_env
from kitbuilder.ops.seal import Sealed as Sealed
from kitbuilder.ops.seal import seal as seal
from kitbuilder.ops.specfile import load_spec
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope

if TYPE_CHECKING:
    from kitbuilder.oci.plan import ImagePlan


class BaseFrames(FrameReuse, Protocol):
    """A verified base kit a build may take frames from (``kit build --delta-from``)."""

    def check_compatible(self, build_info: BuildInfo) -> None:
        """UsageError when the base was compressed otherwise (its frames would not be this build's bytes)."""


@dataclass(frozen=True)
class BuildOptions:
    level: int = 3
    # Worker threads reading small inputs and compressing frames; None = the usable cores, 0 = all on the calling
    # thread (the writer refuses anything outside 0..MAX_THREADS, negatives included).
    # Every value gives the same bytes: each frame is compressed on its own, single-threaded.
    threads: int | None = None
    source_date_epoch: int | None = None
    builder_id: str | None = None  # SLSA runDetails.builder.id; default from the CI environment
    provenance: bool = True  # attestations/provenance.dsse.json inside, KIT.intoto.jsonl beside the kit
    sigstore_bundle: bool = False  # SHA256SUMS.sigstore.json: the SHA256SUMS signature as a Sigstore bundle


@dataclass(frozen=True)
class BuildResult:
    output: Path
    manifest: Manifest
    signers: tuple[str, ...]
    kit_size: int
    kit_sha256: str = ""
    metadata: tuple[str, ...] = ()  # optional metadata members written (attestations, Sigstore bundle)
    detached_provenance: Path | None = None


def build_kit(
    spec_path: Path,
    *,
    keys: list[PrivateKey],
    output: Path,
    options: BuildOptions,
    on_bytes: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    reuse: BaseFrames | None = None,
    detached_provenance: bool = True,
    shown_as: Path | None = None,
) -> BuildResult:
    """Build and sign a kit; the output (and OUTPUT.intoto.jsonl beside it) appears only when complete.

    With ``reuse`` (a verified base kit), a group or chunk frame the base already holds
    (same members, same content) is copied from it verbatim instead of compressed: the same bytes.
    ``shown_as`` is the path errors name when ``output`` is a temporary one (a delta build's full kit).
    Raises HostIOError (disk full, read-only) or UsageError (a bad output path) with nothing left behind.
    """
    if not keys:
        raise UsageError("kit build needs at least one --key")
    if len({k.keyid for k in keys}) != len(keys):
        raise UsageError("--key: the same key is given twice")
    if not 1 <= options.level <= 19:
        raise UsageError(f"--level {options.level}: expected 1..19")
    plan = _plan(spec_path, keys, options, on_start)
    if reuse is not None:
        reuse.check_compatible(plan.build_info)
    sibling = output.with_name(output.name + DETACHED_SUFFIX)
    with_sibling = options.provenance and detached_provenance
    # A bad output path fails now, not after minutes of compression.
    check_target(output)
    if with_sibling:
        check_target(sibling)
    detached = None
    with AtomicFile(output, shown_as=shown_as) as kit_file:
        # The kit's digest (for the detached provenance) and large inputs' content digests run on threads of their
        # own; small inputs are read, hashed and compressed by the frame workers (``_write_inputs``).
        hasher, output_hasher = HashWorker(), HashWorker()
        try:
            written = _write_kit(kit_file.stream, plan, reuse, (hasher, output_hasher), on_bytes)
        finally:
            hasher.close()
            output_hasher.close()
        kit_file.finish()  # a full disk shows here, naming the kit, before the provenance is written
        if written.predicate is not None and with_sibling:
            envelope = _attestation((Subject(output.name, written.kit_sha256),), written.predicate, keys)
            with AtomicFile(sibling, mode=0o644) as provenance_file:
                # JSON Lines: one compact envelope per line.
                provenance_file.stream.write(jsonio.dump_compact(envelope.to_json()) + b"\n")
                # The provenance first: if the kit's rename fails it is removed again, so a detached
                # provenance never sits beside a kit file it does not describe.
                commit_together([provenance_file, kit_file])
            detached = sibling
        elif written.predicate is None:
            # An earlier build's provenance beside this path would describe another file.
            try:
                sibling.unlink(missing_ok=True)
            except OSError as exc:
                raise os_error(exc, sibling, action="remove the earlier provenance") from exc
    return BuildResult(
        output=output,
        manifest=written.manifest,
        signers=tuple(k.keyid for k in keys),
        kit_size=written.kit_size,
        kit_sha256=written.kit_sha256,
        metadata=written.metadata,
        detached_provenance=detached,
    )


@dataclass(frozen=True)
class _Plan:
    """Everything decided before the first byte is written."""

    spec: KitSpec
    options: BuildOptions
    keys: list[PrivateKey]
    inputs: InputList
    image_plan: ImagePlan | None
    shipped: list[ShippedSbom]
    kit_info: KitInfo
    build_info: BuildInfo
    components: tuple[Component, ...]
    started: float


def _plan(
    spec_path: Path, keys: list[PrivateKey], options: BuildOptions, on_start: Callable[[int], None] | None
) -> _Plan:
    """Read the spec and everything it names (inputs, shipped SBOMs, images) and decide the manifest's parts."""
    spec = load_spec(spec_path)
    started = time.time()
    inputs = collect_inputs(spec)
    faults.point("build-inputs-collected")
    if on_start is not None:
        on_start(inputs.total_size())
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
    build_info = BuildInfo(
        tool=f"kitbuilder {__version__}",
        # Format 2: no mtime (every header carries 0) and no thread flag (the bytes never depend on threads).
        compression=Compression(level=options.level),
        # Which key makes SHA256SUMS.sig and the Sigstore bundle, signed: verify checks both when it trusts this
        # key, whatever signatures an attacker adds in front of the envelope's.
        checksum_key_id=keys[0].keyid,
    )
    for component in spec.components:
        if component.id in (KIT_SBOM_COMPONENT, IMAGES_COMPONENT):
            raise UsageError(f"{spec.path}: component id {component.id!r} is reserved for what kit build adds")
    shipped = check_shipped_sboms(spec, inputs)
    image_plan = None
    if spec.images:
        from kitbuilder.oci.plan import plan_images

        image_plan = plan_images(spec.images, spec_path=spec.path)
        if on_start is not None:
            on_start(inputs.total_size() + image_plan.size)
    generated = [Component(id=KIT_SBOM_COMPONENT, role="sbom", subject=spec.name)]
    if image_plan is not None:
        generated.append(Component(id=IMAGES_COMPONENT, role="image"))
    components = tuple(
        Component(id=c.id, role=c.role, phase=c.phase, subject=c.subject, options=c.options) for c in spec.components
    ) + tuple(generated)
    return _Plan(spec, options, keys, inputs, image_plan, shipped, kit_info, build_info, components, started)


@dataclass(frozen=True)
class _Written:
    kit_sha256: str
    kit_size: int
    manifest: Manifest
    predicate: dict[str, Any] | None  # the SLSA predicate, for the detached provenance
    metadata: tuple[str, ...]


def _write_kit(
    out: BinaryIO,
    plan: _Plan,
    reuse: BaseFrames | None,
    hashers: tuple[HashWorker, HashWorker],
    on_bytes: Callable[[int], None] | None,
) -> _Written:
    """Write the archive to ``out`` (the temporary file the caller renames into place when complete)."""
    threads = plan.options.threads
    writer = KitWriter2(
        out,
        level=plan.options.level,
        threads=usable_cores() if threads is None else threads,
        digest_output=True,
        output_hasher=hashers[1],
        reuse=reuse,
    )
    with writer:
        roles = _write_inputs(writer, plan.inputs, on_bytes)
        # Written: nothing after this reads the inputs, and a million of them is a few hundred MiB (the paths the
        # writer keeps are their kit_path strings).
        plan.inputs.clear()
        roles += _write_images(writer, plan.image_plan, on_bytes)
        # The kit's SBOM (and the provenance) give each component the inventory of its files, by digest: the
        # digests so far (the writer's own table, not a copy of it: a million files), then the SBOM joins the payload.
        so_far = writer.table().with_kinds(roles)
        _check_image_digests(so_far, plan.image_plan)
        inventories = component_inventories(so_far)
        sbom_bytes = _kit_sbom(plan.kit_info, plan.components, so_far, inventories, plan.image_plan, plan.shipped)
        del so_far  # its columns are the writer's, which the SBOM's entry extends
        writer.add_bytes(KIT_SBOM_PATH, sbom_bytes)
        roles.append(("sbom", KIT_SBOM_COMPONENT))
        payload = writer.finish_payload()
        # One compact table of the files (core/filelist.py), not an entry object per file.
        files = payload.table.with_kinds(roles)
        manifest = Manifest(
            kit=plan.kit_info,
            build=plan.build_info,
            components=plan.components,
            files=files,
            checks=plan.spec.checks,
            images=plan.image_plan.images if plan.image_plan else (),
            sboms=tuple(plan.shipped),
            frames=payload.frames,
            format_version=2,
        )
        sealed = seal(writer, manifest, plan.keys)
        manifest = sealed.manifest
        extra: list[str] = []
        predicate = None
        if plan.options.provenance:
            predicate = _provenance(plan, inventories).predicate()
            subjects = (Subject(MANIFEST_JSON, sealed.manifest_sha256), Subject(SHA256SUMS, sealed.sums_sha256))
            writer.add_metadata(PROVENANCE_MEMBER, _attestation(subjects, predicate, plan.keys).to_bytes())
            extra.append(PROVENANCE_MEMBER)
        if plan.options.sigstore_bundle:
            from kitbuilder.trust.sigstore_bundle import render_key_bundle

            writer.add_metadata(SIGSTORE_BUNDLE, render_key_bundle(sealed.sums, plan.keys[0]))
            extra.append(SIGSTORE_BUNDLE)
        writer.finish()
    kit_size = writer.offset
    return _Written(writer.output_sha256(), kit_size, manifest, predicate, tuple(extra))


def _write_inputs(
    writer: KitWriter2, inputs: InputList, on_bytes: Callable[[int], None] | None
) -> list[tuple[str, str]]:
    """Every input file into the writer, in order; their (role, component), in the same order.

    A small input is only listed here (``add_later``): the worker making its group frame opens, reads and hashes it
    (``InputReader``), so this thread does next to nothing per file and every core reads. A large one streams from
    here. Either's fault is raised in input order: a large one's only after the frames before it and the small inputs
    still waiting in the open group (``settle``, the writer's order).
    """
    load = inputs.reader()
    for number, kit_path in enumerate(inputs.kit_paths):
        size = inputs.size(number)
        if not layout.is_large(size):
            writer.add_later(kit_path, size, number, load)
            if on_bytes is not None:
                on_bytes(size)
            continue
        item = inputs[number]
        try:
            source = open_input(item, inputs.identity(number))
        except UsageError:
            writer.settle()  # a fault in an earlier frame, in flight or still in the open group, is the first one
            raise
        # One open file for reading and checking: what was hashed is what is packed. The writer settles its own
        # faults (a read error, a size change) the same way; its write errors are the output's (HostIOError).
        try:
            with source:
                writer.add_file(item.kit_path, source, item.size, on_bytes=on_bytes)
        except OSError as exc:
            raise UsageError(f"{item.source}: cannot read ({exc.strerror})") from exc
    return inputs.roles()


def _write_images(
    writer: KitWriter2, plan: ImagePlan | None, on_bytes: Callable[[int], None] | None
) -> list[tuple[str, str]]:
    """The images/ tree (its digests are checked by ``_check_image_digests`` once the writer computed them)."""
    roles: list[tuple[str, str]] = []
    for member in plan.members if plan else ():
        try:
            stream = (member.open_raw or member.open)()
        except Exception:
            writer.settle()  # the inputs' last group, still open, comes first
            raise
        with stream as source:
            writer.add_file(member.kit_path, source, member.size, on_bytes=on_bytes)
        roles.append(("image", IMAGES_COMPONENT))
    return roles


def _check_image_digests(files: FileTable, plan: ImagePlan | None) -> None:
    """The writer hashed what it read; that digest must be the blob's name, or the image source is damaged."""
    if plan is None:
        return
    wanted = {member.kit_path for member in plan.members}
    written = {path: files.sha256(number) for number, path in enumerate(files.paths) if path in wanted}
    for member in plan.members:
        if written[member.kit_path] != member.sha256:
            raise IntegrityError(
                f"{member.label or member.kit_path}: content has sha256:{written[member.kit_path]}, not its digest "
                f"sha256:{member.sha256}; the image source is damaged, re-export it"
            )


def _attestation(subjects: tuple[Subject, ...], predicate: dict[str, Any], keys: list[PrivateKey]) -> Envelope:
    statement = Statement(subjects=subjects, predicate_type=PROVENANCE_PREDICATE_TYPE, predicate=predicate)
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), keys)


def check_shipped_sboms(spec: KitSpec, inputs: InputList) -> list[ShippedSbom]:
    """Validate each SBOM the spec ships (CycloneDX 1.4-1.6, SPDX 2.2/2.3 JSON); UsageError names file and JSON path.
    Read as the payload is (``open_input``): a FIFO or a link put there since the scan is refused, never waited on."""
    shipped: list[ShippedSbom] = []
    for number, item in enumerate(inputs):
        component = item.component
        if component.role != "sbom":
            continue
        with open_input(item, inputs.identity(number)) as source:
            try:
                data = source.read()
            except OSError as exc:
                raise UsageError(f"{item.source}: cannot read ({exc.strerror})") from exc
        try:
            info = check_sbom(data, str(item.source))
        except SbomError as exc:
            raise UsageError(f"{spec.path}: sboms {component.id}: {exc.message}; fix or regenerate the SBOM") from exc
        shipped.append(
            ShippedSbom(
                path=item.kit_path,
                component=component.id,
                subject=component.subject or "",
                format=info.format,
                spec_version=info.spec_version,
            )
        )
    return shipped


def _kit_sbom(
    kit: KitInfo,
    components: tuple[Component, ...],
    files: FileTable,
    inventories: dict[str, Inventory],
    image_plan: ImagePlan | None,
    shipped: list[ShippedSbom],
) -> bytes:
    shipped_paths = {s.path for s in shipped}
    try:
        return render_kit_sbom(
            name=kit.name,
            version=kit.version,
            product=kit.product,
            tool_version=__version__,
            created=kit.created,
            # The kit SBOM's own component would be an empty group: the SBOM does not list itself.
            components=[
                KitComponent(
                    id=c.id, role=c.role, phase=c.phase, subject=c.subject, inventory=inventories.get(c.id, Inventory())
                )
                for c in components
                if c.id != KIT_SBOM_COMPONENT
            ],
            images=[
                SbomImage(ref=r.ref, digest=r.digest, media_type=r.media_type, platforms=r.platforms, size=r.size)
                for r in (image_plan.images if image_plan else ())
            ],
            shipped=shipped,
            shipped_sha256={path: files.sha256(n) for n, path in enumerate(files.paths) if path in shipped_paths},
        )
    except SbomError as exc:
        # Our own output failed the CycloneDX schema: a bug, but say which part.
        raise UsageError(f"{KIT_SBOM_PATH}: generated SBOM is invalid ({exc.message}); please report this") from exc


def _provenance(plan: _Plan, inventories: dict[str, Inventory]) -> Provenance:
    """SLSA provenance: the spec, each component by the inventory of its files and each image by its digest;
    times from SOURCE_DATE_EPOCH when set (reproducible)."""
    spec, options, image_plan = plan.spec, plan.options, plan.image_plan
    base = spec.path.parent.resolve()

    def relative(path: Path) -> str:
        try:
            return path.resolve().relative_to(base).as_posix()
        except ValueError:
            return os.path.relpath(path.resolve(), base).replace(os.sep, "/")

    # A component is an input by its inventory digest (docs/provenance.md): SHA256SUMS already names each file.
    dependencies = [
        Dependency(
            name=component.id,
            uri=f"file:{relative(component.source)}",
            sha256=inventories.get(component.id, Inventory()).sha256,
        )
        for component in spec.components
    ]
    # An image is an input by its manifest digest: that one digest pins every blob it references.
    for image_spec, record in zip(spec.images, image_plan.images if image_plan else (), strict=True):
        digest = record.digest.removeprefix("sha256:")
        dependencies.append(Dependency(name=record.ref, uri=f"file:{relative(image_spec.source)}", sha256=digest))
    builder = builder_from_environment(options.builder_id)
    epoch = options.source_date_epoch
    if epoch is not None:
        started_on = finished_on = timefmt.format_utc(timefmt.from_epoch(epoch))
    else:
        started_on = timefmt.format_utc(timefmt.from_epoch(int(plan.started)))
        finished_on = timefmt.format_utc(timefmt.from_epoch(int(time.time())))
    return Provenance(
        spec_path=relative(spec.path),
        spec_sha256=spec.sha256,
        options={
            "compressionLevel": options.level,
            "sourceDateEpoch": epoch,
        },
        dependencies=tuple(dependencies),
        builder_id=builder.id,
        tool=f"kitbuilder {__version__}",
        started_on=started_on,
        finished_on=finished_on,
        invocation_id=builder.invocation_id,
        ci=builder.ci,
    )
