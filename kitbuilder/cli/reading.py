"""Commands that read a kit: ``kit verify``, ``kit inspect``, ``kit sbom`` and ``kit diff``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kitbuilder.cli.app import main
from kitbuilder.cli.errors import exit_on_error
from kitbuilder.cli.options import TrustArgs, json_option, keyless_check, quiet_option, trust_options
from kitbuilder.cli.render import emit_json, one_line
from kitbuilder.errors import UsageError
from kitbuilder.progress import byte_progress, progress_enabled


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--require-provenance", is_flag=True, help="Fail (exit 6) unless the kit carries signed SLSA provenance.")
@click.option(
    "--attestation",
    "attestations",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A detached KIT.intoto.jsonl whose subject must be this kit file; repeatable.",
)
@click.option(
    "--sigstore-bundle",
    type=click.Path(path_type=Path),
    help="A keyless Sigstore bundle over the kit's SHA256SUMS, checked offline (needs the three options below).",
)
@click.option("--trusted-root", type=click.Path(path_type=Path), help="Sigstore trusted_root.json (keyless).")
@click.option("--cert-identity", help="The signer identity the certificate must carry (e-mail or URI).")
@click.option("--cert-oidc-issuer", help="The OIDC issuer the certificate must name.")
@quiet_option
@json_option
def verify(
    kit: Path,
    trust: TrustArgs,
    require_provenance: bool,
    attestations: tuple[Path, ...],
    sigstore_bundle: Path | None,
    trusted_root: Path | None,
    cert_identity: str | None,
    cert_oidc_issuer: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Verify KIT offline against locally held keys; exit 0 only if every check passes."""
    # Operations and their renderers load with the command that needs them: `kit --version` stays light.
    from kitbuilder.cli.render_reading import verify_text
    from kitbuilder.ops import reading

    with exit_on_error(as_json):
        keyless = keyless_check(sigstore_bundle, trusted_root, cert_identity, cert_oidc_issuer)
        options = trust.inputs().verify_options(
            require_provenance=require_provenance, detached_attestations=attestations, keyless=keyless
        )
        with byte_progress("verify", None, enabled=progress_enabled(quiet or as_json)) as bar:
            report = reading.verify_file(
                kit, options, on_start=bar.set_total if bar else None, on_bytes=bar.advance if bar else None
            )
    if as_json:
        emit_json(report.to_json())
    else:
        verify_text(report)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--sbom", "show_sbom", is_flag=True, help="Summarise the kit SBOM: components, licenses, suppliers.")
@click.option("--provenance", "show_provenance", is_flag=True, help="Show the SLSA provenance: builder, inputs, times.")
@click.option("--images", "show_images", is_flag=True, help="Check and show the container images (OCI layout).")
@click.option(
    "--files", "show_files", is_flag=True, help="List every payload file (reads and checks the signed file list)."
)
@json_option
def inspect(
    kit: Path,
    trust: TrustArgs,
    show_sbom: bool,
    show_provenance: bool,
    show_images: bool,
    show_files: bool,
    as_json: bool,
) -> None:
    """Show what KIT contains, reading only its index and metadata (the file list too with --files)."""
    from kitbuilder.cli.render_inspect import inspect_text
    from kitbuilder.ops import inspect as inspect_op

    with exit_on_error(as_json):
        inputs = trust.inputs(trust_optional=True)
        report = inspect_op.inspect_kit(
            kit,
            policy=inputs.optional_policy(),
            sbom=show_sbom,
            provenance=show_provenance,
            images=show_images,
            files=show_files,
            caps=inputs.caps,
        )
    if as_json:
        emit_json(report.to_json())
    else:
        inspect_text(report)
    if report.verification_error is not None:
        click.echo(f"kit: signatures not verified: {one_line(report.verification_error)}", err=True)
        sys.exit(report.verification_exit_code)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--subject", help="Extract the shipped SBOM describing this component (its spec subject or id).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here (atomically) instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="With -o: print a JSON summary of what was written.")
def sbom(kit: Path, trust: TrustArgs, subject: str | None, output: Path | None, as_json: bool) -> None:
    """Extract an SBOM from KIT without unpacking it: the kit's own, or a shipped one (--subject)."""
    from kitbuilder.cli.render_reading import sbom_text
    from kitbuilder.ops import reading

    with exit_on_error(as_json):
        if as_json and output is None:
            raise UsageError("--json describes the file written with -o; without -o the SBOM itself is printed")
        export = reading.export_sbom(kit, trust.inputs(trust_optional=True), subject=subject, output=output)
    # The SBOM first: if stdout cannot take it, that error is the only line on stderr.
    if output is None:
        sys.stdout.buffer.write(export.sbom.data)
        sys.stdout.buffer.flush()
    if not export.sbom.verified:
        click.echo("kit: signatures not verified (pass --key or --trust-root); digest matches the manifest", err=True)
    if output is not None and as_json:
        emit_json(export.to_json())
    elif output is not None:
        sbom_text(export)


@main.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@trust_options
@json_option
def diff(old: Path, new: Path, trust: TrustArgs, as_json: bool) -> None:
    """What changed from OLD to NEW: files, kit fields, components, checks, signers (metadata only)."""
    from kitbuilder.cli.render_reading import diff_json, diff_text
    from kitbuilder.ops import diff as diff_op

    with exit_on_error(as_json):
        inputs = trust.inputs(trust_optional=True)
        result = diff_op.diff_kits(old, new, policy=inputs.optional_policy(), caps=inputs.caps)
    if as_json:
        emit_json(diff_json(result))
    else:
        diff_text(result)
