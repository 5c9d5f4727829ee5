"""``kit build`` (a full kit, or a delta with --delta-from) and ``kit patch`` (a kit file or a directory)."""

from __future__ import annotations

from pathlib import Path

import click

from kitbuilder.cli.app import main
from kitbuilder.cli.errors import exit_on_error
from kitbuilder.cli.options import TrustArgs, json_option, quiet_option, trust_options
from kitbuilder.cli.render import emit_json
from kitbuilder.errors import UsageError
from kitbuilder.progress import byte_progress, progress_enabled


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "--key", "keys", multiple=True, required=True, type=click.Path(path_type=Path), help="Private key; repeatable."
)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--level", type=int, default=3, show_default=True, help="zstd level 1..19.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Worker threads compressing frames (default: the usable cores; 0 = none, all on one thread). "
    "Every value gives the same bytes.",
)
@click.option("--delta-from", type=click.Path(path_type=Path), help="Write a delta kit against this base kit.")
@click.option("--full-out", type=click.Path(path_type=Path), help="With --delta-from: also keep the full new kit here.")
@click.option(
    "--max-members",
    type=click.IntRange(min=1),
    default=None,
    help="With --delta-from: the most files the base and the new kit may hold when read back (default 50,000).",
)
@click.option(
    "--delta-frames",
    type=click.Choice(["content", "verbatim"]),
    default=None,
    help="With --delta-from: carry changed small files as content deltas that kit patch rebuilds frames from "
    "(content, the default), or the new kit's frames as they are (verbatim: patch only copies, any libzstd).",
)
@click.option(
    "--builder-id",
    help="SLSA builder id recorded in the provenance (default: derived from GitHub Actions / GitLab CI, else local).",
)
@click.option(
    "--no-provenance",
    is_flag=True,
    help="Write no attestations/provenance.dsse.json inside the kit and no OUT.intoto.jsonl beside it.",
)
@click.option(
    "--sigstore-bundle",
    is_flag=True,
    help="Also store SHA256SUMS.sigstore.json: the first key's SHA256SUMS signature as a Sigstore bundle v0.3.",
)
@quiet_option
@json_option
def build(
    spec: Path,
    keys: tuple[Path, ...],
    out: Path,
    level: int,
    threads: int | None,
    delta_from: Path | None,
    full_out: Path | None,
    max_members: int | None,
    delta_frames: str | None,
    builder_id: str | None,
    no_provenance: bool,
    sigstore_bundle: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Build and sign a kit from SPEC (or, with --delta-from, a delta kit against a base)."""
    # Operations and their renderers load with the command that needs them: `kit --version` stays light.
    from kitbuilder.cli.render_release import release_text
    from kitbuilder.ops import release

    with exit_on_error(as_json):
        request = release.ReleaseRequest(
            spec=spec,
            key_paths=keys,
            out=out,
            level=level,
            threads=threads,
            builder_id=builder_id,
            provenance=not no_provenance,
            sigstore_bundle=sigstore_bundle,
            delta_from=delta_from,
            full_out=full_out,
            max_members=max_members,
            delta_frames=delta_frames,
        )
        with byte_progress("build", None, enabled=progress_enabled(quiet or as_json)) as bar:
            built = release.build_release(
                request, on_bytes=bar.advance if bar else None, on_start=bar.set_total if bar else None
            )
    if as_json:
        emit_json(built.to_json())
    else:
        release_text(built)


@main.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("delta", type=click.Path(path_type=Path))
@trust_options
@click.option("--out", type=click.Path(path_type=Path), help="Write the new kit here.")
@click.option("--in-place", is_flag=True, help="Replace BASE atomically with the new kit.")
@json_option
def patch(base: Path, delta: Path, trust: TrustArgs, out: Path | None, in_place: bool, as_json: bool) -> None:
    """Apply DELTA to BASE: copy unchanged frames verbatim, check every member, replace atomically."""
    from kitbuilder.cli.render_release import patch_text
    from kitbuilder.ops import patching

    with exit_on_error(as_json):
        if (out is None) == (not in_place):
            raise UsageError("give exactly one of --out NEW or --in-place")
        patched = patching.patch(base, delta, output=out, trust=trust.inputs())
    if as_json:
        emit_json(patched.to_json())
    else:
        patch_text(patched)
