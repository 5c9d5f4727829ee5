"""Text and JSON for ``kit images push|export``. ``PushResult`` and ``ExportResult`` (ops/images.py) carry
``to_json`` without the ``ok`` a command document has; the documents are completed here."""

from __future__ import annotations

import click

from kitbuilder.ops.images import ExportResult, PushResult


def push_json(result: PushResult) -> dict[str, object]:
    return {"ok": True, **result.to_json()}


def push_text(result: PushResult) -> None:
    for image in result.images:
        click.echo(
            f"pushed {image.pushed_as}@{image.digest}: {image.blobs_sent} blobs sent "
            f"({image.bytes_sent} bytes), {image.blobs_skipped} already there, {image.blobs_mounted} mounted"
        )


def export_json(result: ExportResult) -> dict[str, object]:
    return {"ok": True, **result.to_json()}


def export_text(result: ExportResult) -> None:
    click.echo(f"exported {len(result.images)} image(s) to {result.out_dir} ({result.bytes} bytes)")
    for image in result.images:
        click.echo(f"  {image.ref}  {image.digest}")
