"""Text for ``kit inspect``. Its report's sections (build, sbom, provenance, images) are still documents, not
models, in ops/inspect.py; the renderer takes the typed report and reads the sections from its printable JSON."""

from __future__ import annotations

from typing import Any

import click

from kitbuilder.core import text
from kitbuilder.ops.inspect import InspectReport


def inspect_text(report: InspectReport) -> None:
    document = text.printable_tree(report.to_json())
    kit = document["kit"]
    click.echo(f"{kit['name']} {kit['version']}  sequence {kit['sequence']}  {kit['product']}/{kit['channel']}")
    click.echo(f"expires {kit['expires']}" + (f"  created {kit['created']}" if kit.get("created") else ""))
    click.echo(f"{kit['bytes']} bytes on disk, {document['payloadBytes']} bytes of payload")
    if document.get("delta"):
        delta = document["delta"]
        click.echo(
            f"DELTA kit for base sequence {delta['baseSequence']} ({delta['baseVersion']}), base manifest "
            f"sha256 {delta['baseManifestSha256']}; {len(delta.get('removed', []))} path(s) removed"
        )
    signatures = document["signatures"]
    if signatures["verified"]:
        for keyid in signatures["verifiedKeyIds"]:
            click.echo(f"signer {keyid} (verified)")
    else:
        for keyid in signatures["claimedKeyIds"]:
            click.echo(f"signer {keyid} (unverified: pass --key or --trust-root to check)")
    for role, totals in document["roles"].items():
        click.echo(f"{role}: {totals['files']} files, {totals['bytes']} bytes")
    for entry in document["files"]:
        click.echo(f"  {entry['size']:>12}  {entry['role']:<10} {entry['path']}")
    for name in document.get("optionalMetadata", []):
        click.echo(f"metadata: {name}")
    if "sbom" in document:
        _sbom_section(document["sbom"])
    if "provenance" in document:
        _provenance_section(document["provenance"])
    if "images" in document:
        _images_section(document["images"])


def _counts(label: str, counts: dict[str, int]) -> None:
    if counts:
        click.echo(f"  {label}: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    else:
        click.echo(f"  {label}: none stated")


def _sbom_section(section: dict[str, Any]) -> None:
    kit_sbom = section.get("kitSbom")
    if kit_sbom is None:
        click.echo("SBOM: this kit has no sbom/kit.cdx.json")
    else:
        click.echo(
            f"SBOM {kit_sbom['path']} (CycloneDX {kit_sbom['specVersion']}, {kit_sbom['serialNumber']}): "
            f"{kit_sbom['componentCount']} components; "
            + ("lists exactly the manifest's files" if kit_sbom["matchesManifest"] else "DIFFERS from the manifest")
        )
        _counts("by type", kit_sbom["byType"])
        _counts("licenses", kit_sbom["licenses"])
        _counts("suppliers", kit_sbom["suppliers"])
    for shipped in section.get("shipped", []):
        click.echo(
            f"  shipped: {shipped['path']} ({shipped['format']} {shipped['specVersion']}) "
            f"describes {shipped['subject']}: {shipped['componentCount']} components"
        )
        _counts("  licenses", shipped["licenses"])
        _counts("  suppliers", shipped["suppliers"])


def _provenance_section(section: dict[str, Any]) -> None:
    if not section.get("present"):
        click.echo("provenance: none in this kit")
        return
    if section["verified"]:
        state = "verified"
    else:
        state = "NOT verified" if section.get("error") else "unverified: pass --key or --trust-root to check"
    click.echo(f"provenance {section['path']} ({section['predicateType']}, {state})")
    if not section["subjectsMatch"]:
        click.echo("  its subjects do NOT match this kit's manifest.json/SHA256SUMS: it describes another build")
    if section.get("error"):
        click.echo(f"  signature problem: {section['error']}")
    click.echo(f"  builder {section['builderId']}")
    click.echo(f"  build type {section['buildType']}")
    click.echo(f"  spec {section['spec']['path']} sha256 {section['spec']['sha256']}")
    click.echo(f"  started {section['startedOn']}  finished {section['finishedOn']}")
    if section.get("invocationId"):
        click.echo(f"  invocation {section['invocationId']}")
    click.echo(f"  {len(section['inputs'])} inputs:")
    for item in section["inputs"]:
        click.echo(f"    {item['digest']['sha256'][:16]}…  {item['name']}  ← {item['uri']}")


def _images_section(section: dict[str, Any]) -> None:
    if not section["images"]:
        click.echo("images: none in this kit")
        return
    for image in section["images"]:
        click.echo(
            f"image {image['ref']}  {image['digest']}  {', '.join(image['platforms']) or 'no platform stated'}  "
            f"{image['layers']} layers, {image['layerBytes']} layer bytes"
        )
    click.echo(
        f"  {section['blobs']} blobs, {section['storedBytes']} bytes stored; "
        f"{section['sharedBytesSaved']} bytes saved by sharing blobs between images"
    )
