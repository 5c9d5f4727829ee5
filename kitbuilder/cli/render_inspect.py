"""Text for ``kit inspect``, from the typed report (ops/inspect.py) and its typed sections (ops/inspect_sections.py,
oci/check.py ``LayoutSummary``); every string a kit supplies is shown through ``text.printable``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kitbuilder.core import text
from kitbuilder.core.sbom.model import SbomSummary
from kitbuilder.ops.inspect import InspectReport
from kitbuilder.ops.inspect_sections import ProvenanceSection, SbomSection

if TYPE_CHECKING:
    from kitbuilder.oci.check import LayoutSummary

p = text.printable


def inspect_text(report: InspectReport) -> None:
    kit = report.manifest.kit
    click.echo(f"{p(kit.name)} {p(kit.version)}  sequence {kit.sequence}  {p(kit.product)}/{p(kit.channel)}")
    click.echo(f"expires {p(kit.expires)}" + (f"  created {p(kit.created)}" if kit.created else ""))
    click.echo(f"{report.kit_bytes} bytes on disk, {report.manifest.payload_bytes} bytes of payload")
    delta = report.manifest.delta
    if delta is not None:
        click.echo(
            f"DELTA kit for base sequence {delta.base_sequence} ({p(delta.base_version)}), base manifest "
            f"sha256 {p(delta.base_manifest_sha256)}; {len(delta.removed or ())} path(s) removed"
        )
    if report.verified_signers is not None:
        for keyid in report.verified_signers:
            click.echo(f"signer {p(keyid)} (verified)")
    else:
        for keyid in report.claimed_signers:
            click.echo(f"signer {p(keyid)} (unverified: pass --key or --trust-root to check)")
    for role, totals in report.roles().items():
        click.echo(f"{p(role)}: {totals['files']} files, {totals['bytes']} bytes")
    for entry in report.manifest.files:
        click.echo(f"  {entry.size:>12}  {p(entry.role):<10} {p(entry.path)}")
    for name in report.optional_metadata():
        click.echo(f"metadata: {p(name)}")
    if report.sbom is not None:
        _sbom_section(report.sbom)
    if report.provenance is not None:
        _provenance_section(report.provenance)
    if report.images is not None:
        _images_section(report.images)


def _counts(label: str, counts: dict[str, int]) -> None:
    if counts:
        click.echo(f"  {label}: " + ", ".join(f"{p(name)} {count}" for name, count in sorted(counts.items())))
    else:
        click.echo(f"  {label}: none stated")


def _summary_counts(summary: SbomSummary, *, prefix: str = "", by_type: bool = False) -> None:
    if by_type:
        _counts(f"{prefix}by type", summary.by_type)
    _counts(f"{prefix}licenses", summary.licenses)
    _counts(f"{prefix}suppliers", summary.suppliers)


def _sbom_section(section: SbomSection) -> None:
    kit_sbom = section.kit_sbom
    if kit_sbom is None:
        click.echo("SBOM: this kit has no sbom/kit.cdx.json")
    else:
        click.echo(
            f"SBOM {p(kit_sbom.path)} (CycloneDX {_shown(kit_sbom.spec_version)}, {_shown(kit_sbom.serial_number)}): "
            f"{kit_sbom.summary.component_count} components; "
            + ("lists exactly the manifest's files" if kit_sbom.matches_manifest else "DIFFERS from the manifest")
        )
        _summary_counts(kit_sbom.summary, by_type=True)
    for shipped in section.shipped:
        record = shipped.record
        click.echo(
            f"  shipped: {p(record.path)} ({p(record.format)} {p(record.spec_version)}) "
            f"describes {p(record.subject)}: {shipped.summary.component_count} components"
        )
        _summary_counts(shipped.summary, prefix="  ")


def _provenance_section(section: ProvenanceSection) -> None:
    found = section.attestation
    if found is None:
        click.echo("provenance: none in this kit")
        return
    if found.verified_key_ids is not None:
        state = "verified"
    else:
        state = "NOT verified" if found.error else "unverified: pass --key or --trust-root to check"
    click.echo(f"provenance {p(found.path)} ({p(found.predicate_type)}, {state})")
    if not found.subjects_match:
        click.echo("  its subjects do NOT match this kit's manifest.json/SHA256SUMS: it describes another build")
    if found.error:
        click.echo(f"  signature problem: {p(found.error)}")
    view = found.view
    click.echo(f"  builder {p(view.builder_id)}")
    click.echo(f"  build type {p(view.build_type)}")
    click.echo(f"  spec {p(view.spec_path)} sha256 {p(view.spec_sha256)}")
    click.echo(f"  started {_shown(view.started_on)}  finished {_shown(view.finished_on)}")
    if view.invocation_id:
        click.echo(f"  invocation {p(view.invocation_id)}")
    click.echo(f"  {len(view.dependencies)} inputs:")
    for item in view.dependencies:
        click.echo(f"    {p(item.sha256)[:16]}…  {p(item.name)}  ← {p(item.uri)}")


def _images_section(section: LayoutSummary) -> None:
    if not section.images:
        click.echo("images: none in this kit")
        return
    for image in section.images:
        record = image.record
        platforms = ", ".join(p(platform) for platform in record.platforms) or "no platform stated"
        click.echo(
            f"image {p(record.ref)}  {p(record.digest)}  {platforms}  "
            f"{record.layers} layers, {image.layer_bytes} layer bytes"
        )
    click.echo(
        f"  {section.blob_count} blobs, {section.stored_bytes} bytes stored; "
        f"{section.saved_bytes} bytes saved by sharing blobs between images"
    )


def _shown(value: str | None) -> str:
    """An optional string as the report always showed it (None when absent)."""
    return "None" if value is None else p(value)
