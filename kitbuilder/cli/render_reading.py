"""Text for ``kit verify``, ``kit diff`` and ``kit sbom -o``; their JSON is the results' own ``to_json``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kitbuilder.core import text

if TYPE_CHECKING:
    # Only named in annotations: `kit verify` would otherwise import diff's and sbom's operations too.
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
    p = text.printable
    old, new = diff.old, diff.new
    click.echo(
        f"{p(old.name)} {p(old.version)} (sequence {old.sequence}) → "
        f"{p(new.name)} {p(new.version)} (sequence {new.sequence})"
    )
    for field, change in diff.kit:
        click.echo(f"  kit.{p(field)}: {_shown(change.old)} → {_shown(change.new)}")
    files = diff.files
    for entry in files.added:
        click.echo(f"  + {p(entry.path)} ({entry.size} bytes)")
    for entry in files.removed:
        click.echo(f"  - {p(entry.path)} ({entry.size} bytes)")
    for modified in files.changed:
        click.echo(f"  ~ {p(modified.path)} ({modified.old_size} → {modified.new_size} bytes)")
    click.echo(f"  {files.unchanged} files unchanged")
    frames = diff.frames
    if frames is not None:
        click.echo(
            f"  {frames.shared} of {frames.new} payload frames shared; a delta would ship "
            f"{frames.new_frames} ({frames.new_bytes} bytes compressed)"
        )
    for kind, changes in (
        ("component", diff.components),
        ("check", diff.checks),
        ("image", diff.images),
        ("sbom", diff.sboms),
    ):
        for verb, ids in (("added", changes.added), ("removed", changes.removed), ("changed", changes.changed)):
            for item in ids:
                click.echo(f"  {kind} {verb}: {p(item)}")
    signers = diff.signers
    state = "verified" if signers.verified else "claimed, unverified"
    for verb, keyids in (("added", signers.added), ("removed", signers.removed)):
        for keyid in keyids:
            click.echo(f"  signer {verb}: {p(keyid)} ({state})")


def _shown(value: str | int | None) -> str:
    """A kit field's value as the text report always showed it (None when one kit lacks the field)."""
    return text.printable(value) if isinstance(value, str) else str(value)


def diff_json(diff: KitDiff) -> dict[str, object]:
    """The diff-report document: KitDiff (ops/diff.py) has no ``ok`` of its own."""
    return {"ok": True, **diff.to_json()}
