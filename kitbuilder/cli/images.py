"""``kit images push|export``: a verified kit's container images into a registry or an OCI layout."""

from __future__ import annotations

from pathlib import Path

import click

from kitbuilder.cli.app import main
from kitbuilder.cli.errors import exit_on_error
from kitbuilder.cli.options import RegistryArgs, TrustArgs, json_option, quiet_option, registry_options, trust_options
from kitbuilder.cli.render import emit_json
from kitbuilder.progress import byte_progress, progress_enabled


@main.group()
def images() -> None:
    """Container images in a kit: export them as an OCI layout, or push them into a registry."""


@images.command("push")
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--registry", required=True, help="HOST[:PORT] of the registry; no other host is contacted.")
@click.option("--ref", "refs", multiple=True, help="Push only this image (its reference in the kit); repeatable.")
@registry_options
@quiet_option
@json_option
def images_push(
    kit: Path,
    trust: TrustArgs,
    registry: str,
    refs: tuple[str, ...],
    registry_args: RegistryArgs,
    quiet: bool,
    as_json: bool,
) -> None:
    """Verify KIT, then push its images to REGISTRY (blobs already there are skipped; rerun to resume)."""
    # Operations and their renderers load with the command that needs them: `kit --version` stays light.
    from kitbuilder.cli.render_images import push_json, push_text
    from kitbuilder.ops import pushing

    with exit_on_error(as_json):
        options = trust.inputs().verify_options()
        with byte_progress(f"push {registry}", None, enabled=progress_enabled(quiet or as_json)) as bar:
            result = pushing.push(
                kit,
                registry,
                options,
                registry_args.access(),
                refs=refs,
                on_bytes=bar.advance if bar else None,
                on_start=bar.set_total if bar else None,
            )
    if as_json:
        emit_json(push_json(result))
    else:
        push_text(result)


@images.command("export")
@click.argument("kit", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@trust_options
@quiet_option
@json_option
def images_export(kit: Path, out_dir: Path, trust: TrustArgs, quiet: bool, as_json: bool) -> None:
    """Verify KIT, then write its images to OUT_DIR as a plain OCI image layout (skopeo, umoci, podman read it)."""
    from kitbuilder.cli.render_images import export_json, export_text
    from kitbuilder.ops import images as images_op

    with exit_on_error(as_json):
        options = trust.inputs().verify_options()
        with byte_progress("export", None, enabled=progress_enabled(quiet or as_json)) as bar:
            result = images_op.export_images(kit, out_dir, options, on_bytes=bar.advance if bar else None)
    if as_json:
        emit_json(export_json(result))
    else:
        export_text(result)
