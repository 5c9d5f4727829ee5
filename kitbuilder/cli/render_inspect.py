"""Text for ``kit inspect``, from the typed report (ops/inspect.py) and its typed sections (ops/inspect_sections.py,
oci/check.py ``LayoutSummary``); every string a kit supplies is shown through ``text.printable``.

The lines are gathered and written at once: a listing of a million files is one write, not a million.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from kitbuilder.core import text

if TYPE_CHECKING:
    from kitbuilder.core.sbom.model import SbomSummary
    from kitbuilder.oci.check import LayoutSummary
    from kitbuilder.ops.inspect import InspectReport
    from kitbuilder.ops.inspect_sections import ProvenanceSection, SbomSection

p = text.printable
Echo = Callable[[str], None]


def inspect_text(report: InspectReport) -> None:
    out: list[str] = []
    echo = out.append
    kit = report.manifest.kit
    echo(f"{p(kit.name)} {p(kit.version)}  sequence {kit.sequence}  {p(kit.product)}/{p(kit.channel)}")
    echo(f"expires {p(kit.expires)}" + (f"  created {p(kit.created)}" if kit.created else ""))
    echo(
        f"{report.kit_bytes} bytes on disk, {report.manifest.file_count} files, "
        f"{report.manifest.payload_bytes} bytes of payload"
    )
    delta = report.manifest.delta
    if delta is not None:
        echo(
            f"DELTA kit for base sequence {delta.base_sequence} ({p(delta.base_version)}), base manifest "
            f"sha256 {p(delta.base_manifest_sha256)}; {len(delta.removed or ())} path(s) removed; "
            f"changed files travel as {'content deltas' if delta.frames == 'content' else 'verbatim frames'} "
            "(roles delta-patch, delta-file: content; delta-frame: frames)"
        )
    if report.verified_signers is not None:
        for keyid in report.verified_signers:
            echo(f"signer {p(keyid)} (verified)")
    else:
        # A key was given and the check failed (the reason is on stderr), or no key was given at all.
        state = "NOT verified" if report.verification_error else "unverified: pass --key or --trust-root to check"
        for keyid in report.claimed_signers:
            echo(f"signer {p(keyid)} ({state})")
    roles = {c.id: c.role for c in report.manifest.components}
    for component, payload in report.component_payloads():
        echo(f"component {p(component)} ({p(roles[component])}): {payload.files} files, {payload.bytes} bytes")
    for role, totals in report.roles().items():
        echo(f"{p(role)}: {totals['files']} files, {totals['bytes']} bytes")
    if report.files_listed:
        shown: dict[str, str] = {}  # one printable form per role (roles repeat; paths do not)
        for entry in report.manifest.files:
            if entry.role not in shown:
                shown[entry.role] = f"{p(entry.role):<10}"
            echo(f"  {entry.size:>12}  {shown[entry.role]} {p(entry.path)}")
    for name in report.optional_metadata():
        echo(f"metadata: {p(name)}")
    if report.sbom is not None:
        _sbom_section(report.sbom, echo)
    if report.provenance is not None:
        _provenance_section(report.provenance, echo)
    if report.images is not None:
        _images_section(report.images, echo)
    click.echo("\n".join(out))


def _counts(label: str, counts: dict[str, int], echo: Echo) -> None:
    if counts:
        echo(f"  {label}: " + ", ".join(f"{p(name)} {count}" for name, count in sorted(counts.items())))
    else:
        echo(f"  {label}: none stated")


def _summary_counts(summary: SbomSummary, echo: Echo, *, prefix: str = "", by_type: bool = False) -> None:
    if by_type:
        _counts(f"{prefix}by type", summary.by_type, echo)
    _counts(f"{prefix}licenses", summary.licenses, echo)
    _counts(f"{prefix}suppliers", summary.suppliers, echo)


def _sbom_section(section: SbomSection, echo: Echo) -> None:
    kit_sbom = section.kit_sbom
    if kit_sbom is None:
        echo("SBOM: this kit has no sbom/kit.cdx.json")
    else:
        echo(
            f"SBOM {p(kit_sbom.path)} (CycloneDX {_shown(kit_sbom.spec_version)}, {_shown(kit_sbom.serial_number)}): "
            f"{kit_sbom.summary.component_count} components; "
            + ("lists exactly the manifest's files" if kit_sbom.matches_manifest else "DIFFERS from the manifest")
        )
        _summary_counts(kit_sbom.summary, echo, by_type=True)
    for shipped in section.shipped:
        record = shipped.record
        echo(
            f"  shipped: {p(record.path)} ({p(record.format)} {p(record.spec_version)}) "
            f"describes {p(record.subject)}: {shipped.summary.component_count} components"
        )
        _summary_counts(shipped.summary, echo, prefix="  ")


def _provenance_section(section: ProvenanceSection, echo: Echo) -> None:
    found = section.attestation
    if found is None:
        echo("provenance: none in this kit")
        return
    if found.verified_key_ids is not None:
        state = "verified"
    else:
        state = "NOT verified" if found.error else "unverified: pass --key or --trust-root to check"
    echo(f"provenance {p(found.path)} ({p(found.predicate_type)}, {state})")
    if not found.subjects_match:
        echo("  its subjects do NOT match this kit's manifest.json/SHA256SUMS: it describes another build")
    if found.error:
        echo(f"  signature problem: {p(found.error)}")
    view = found.view
    echo(f"  builder {p(view.builder_id)}")
    echo(f"  build type {p(view.build_type)}")
    echo(f"  spec {p(view.spec_path)} sha256 {p(view.spec_sha256)}")
    echo(f"  started {_shown(view.started_on)}  finished {_shown(view.finished_on)}")
    if view.invocation_id:
        echo(f"  invocation {p(view.invocation_id)}")
    echo(f"  {len(view.dependencies)} inputs:")
    for item in view.dependencies:
        echo(f"    {p(item.sha256)[:16]}…  {p(item.name)}  ← {p(item.uri)}")


def _images_section(section: LayoutSummary, echo: Echo) -> None:
    if not section.images:
        echo("images: none in this kit")
        return
    for image in section.images:
        record = image.record
        platforms = ", ".join(p(platform) for platform in record.platforms) or "no platform stated"
        echo(
            f"image {p(record.ref)}  {p(record.digest)}  {platforms}  "
            f"{record.layers} layers, {image.layer_bytes} layer bytes"
        )
    echo(
        f"  {section.blob_count} blobs, {section.stored_bytes} bytes stored; "
        f"{section.saved_bytes} bytes saved by sharing blobs between images"
    )


def _shown(value: str | None) -> str:
    """An optional string as the report always showed it (None when absent)."""
    return "None" if value is None else p(value)
