"""Text for ``kit build`` and ``kit patch``; their JSON is the results' own ``to_json``."""

from __future__ import annotations

import click

from kitbuilder.core import text
from kitbuilder.ops.patching import DirectoryPatch, FilePatch, Patched
from kitbuilder.ops.release import DeltaRelease, FullRelease, Release


def release_text(release: Release) -> None:
    if isinstance(release, DeltaRelease):
        _delta_text(release)
    else:
        _full_text(release)


def _delta_text(release: DeltaRelease) -> None:
    delta = release.result
    click.echo(
        f"built delta {release.out}: {len(delta.added)} added, {len(delta.changed)} changed, "
        f"{len(delta.removed)} removed, {delta.reused} reused from {release.base}; {delta.delta_bytes} bytes"
    )


def _full_text(release: FullRelease) -> None:
    result = release.result
    manifest = result.manifest
    kit = manifest.kit
    click.echo(
        f"built {release.out}: {kit.name} {kit.version} (sequence {kit.sequence}), {len(manifest.files)} files, "
        f"{manifest.payload_bytes} bytes → {result.kit_size} bytes"
    )
    for keyid in result.signers:
        click.echo(f"signed by {keyid}")
    for name in result.metadata:
        click.echo(f"with {name}")
    if result.detached_provenance is not None:
        click.echo(f"provenance for the kit file: {result.detached_provenance}")


def patch_text(patched: Patched) -> None:
    kit = patched.kit
    what = f"{kit.name} {text.printable(kit.version)} (sequence {kit.sequence})"
    if isinstance(patched, DirectoryPatch):
        result = patched.result
        if result.already_patched:
            rolled = " (an interrupted patch was finished first)" if result.rolled_forward else ""
            click.echo(f"already patched: {patched.directory}/ is {what}{rolled}")
        else:
            click.echo(
                f"patched {patched.directory}/: {what}; "
                f"{result.reused} files kept (re-hashed), {result.written} written, {result.removed} removed"
            )
        return
    _file_patch_text(patched, what)


def _file_patch_text(patched: FilePatch, what: str) -> None:
    result = patched.result
    if result.already_patched:
        click.echo(f"already patched: {result.output} is {what}")
    else:
        rebuilt = f", {result.rebuilt} rebuilt" if result.rebuilt else ""
        click.echo(
            f"patched {result.output}: {what}; {result.copied_from_base} frames from base, "
            f"{result.copied_from_delta} from delta{rebuilt}, {result.bytes_written} bytes"
        )
