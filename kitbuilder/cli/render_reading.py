"""Text for ``kit verify``, ``kit diff`` and ``kit sbom -o``; their JSON is the results' own ``to_json``."""

from __future__ import annotations

import click

from kitbuilder.core import text
from kitbuilder.ops.diff import KitDiff
from kitbuilder.ops.reading import SbomExport
from kitbuilder.ops.verify import VerifyReport


def verify_text(report: VerifyReport) -> None:
    info = report.manifest.kit
    click.echo(
        f"OK {report.path}: {info.name} {text.printable(info.version)} sequence {info.sequence} "
        f"({info.product}/{info.channel})"
    )
    for check in report.checks:
        click.echo(f"  ✓ {text.printable(check)}")
    for keyid in report.signers:
        click.echo(f"  signed by {keyid}")
    click.echo(f"  sha256 {report.kit_sha256}")


def sbom_text(export: SbomExport) -> None:
    sbom = export.sbom
    click.echo(f"wrote {export.out}: {sbom.path} ({sbom.format}, {len(sbom.data)} bytes)")


def diff_text(diff: KitDiff) -> None:
    # KitDiff's sections are computed in its to_json (ops/diff.py); shown here from that one computation.
    document = text.printable_tree(diff.to_json())
    old, new = document["old"], document["new"]
    click.echo(
        f"{old['name']} {old['version']} (sequence {old['sequence']}) → "
        f"{new['name']} {new['version']} (sequence {new['sequence']})"
    )
    for field, change in document["kit"].items():
        click.echo(f"  kit.{field}: {change['old']} → {change['new']}")
    files = document["files"]
    for entry in files["added"]:
        click.echo(f"  + {entry['path']} ({entry['size']} bytes)")
    for entry in files["removed"]:
        click.echo(f"  - {entry['path']} ({entry['size']} bytes)")
    for entry in files["changed"]:
        click.echo(f"  ~ {entry['path']} ({entry['oldSize']} → {entry['newSize']} bytes)")
    click.echo(f"  {files['unchanged']} files unchanged")
    frames = document.get("frames")
    if frames is not None:
        click.echo(
            f"  {frames['shared']} of {frames['new']} payload frames shared; a delta would ship "
            f"{frames['newFrames']} ({frames['newBytes']} bytes compressed)"
        )
    for kind in ("components", "checks", "images", "sboms"):
        for verb, ids in document[kind].items():
            for item in ids:
                click.echo(f"  {kind[:-1]} {verb}: {item}")
    signers = document["signers"]
    state = "verified" if signers["verified"] else "claimed, unverified"
    for verb in ("added", "removed"):
        for keyid in signers[verb]:
            click.echo(f"  signer {verb}: {keyid} ({state})")


def diff_json(diff: KitDiff) -> dict[str, object]:
    """The diff-report document: KitDiff (ops/diff.py) has no ``ok`` of its own."""
    return {"ok": True, **diff.to_json()}
