"""The ``kit`` command: parse arguments, call one operation, render, map errors to exit codes."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from kitbuilder import __version__
from kitbuilder.archive.reader import Caps
from kitbuilder.core import timefmt
from kitbuilder.errors import EXIT_CODES, KitError, UsageError
from kitbuilder.ops import build as build_op
from kitbuilder.ops import inspect as inspect_op
from kitbuilder.ops import keys as keys_op
from kitbuilder.ops import verify as verify_op
from kitbuilder.progress import byte_progress, progress_enabled
from kitbuilder.trust.keys import KEY_TYPES
from kitbuilder.trust.signatures import TrustPolicy


def _emit_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _fail(error: KitError, *, as_json: bool) -> NoReturn:
    if as_json:
        _emit_json({"ok": False, "error": {"kind": error.kind, "exitCode": error.exit_code, "message": str(error)}})
    click.echo(f"kit: {error.kind} error: {error}", err=True)
    sys.exit(error.exit_code)


@contextlib.contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """The one place where library errors become messages and exit codes."""
    try:
        yield
    except KitError as error:
        _fail(error, as_json=as_json)
    except KeyboardInterrupt:
        click.echo("kit: interrupted", err=True)
        sys.exit(130)


def _now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return timefmt.parse_utc(value)
    except ValueError as exc:
        raise UsageError(f"--now {value}: {exc}") from exc


def _policy(keys: tuple[Path, ...], trust_root: Path | None, threshold: int | None, now: datetime) -> TrustPolicy:
    return keys_op.trust_policy(list(keys), trust_root, threshold, now=now)


trust_options = [
    click.option(
        "--key", "keys", multiple=True, type=click.Path(path_type=Path), help="Trusted public key (PEM); repeatable."
    ),
    click.option("--trust-root", type=click.Path(path_type=Path), help="Trust root JSON from `kit trust init`."),
    click.option("--threshold", type=int, help="With --key: distinct signers required (default: all keys given)."),
]


def with_trust(func: Any) -> Any:
    for option in reversed(trust_options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kit")
def main() -> None:
    """Build, sign, verify and inspect offline kits. Exit codes: docs/exit-codes.md."""


@main.command()
@click.option("--type", "key_type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True)
@click.option(
    "--out", "prefix", required=True, type=click.Path(path_type=Path), help="Writes PREFIX.key and PREFIX.pub."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True)
def keygen(key_type: str, prefix: Path, force: bool, as_json: bool) -> None:
    """Generate a signing key pair (private key encrypted with $KIT_PASSPHRASE when set)."""
    with _errors(as_json):
        result = keys_op.keygen(key_type, prefix, force=force)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "keyid": result.keyid,
                "type": key_type,
                "private": str(result.private_path),
                "public": str(result.public_path),
                "encrypted": result.encrypted,
            }
        )
    else:
        click.echo(
            f"wrote {result.private_path} ({'encrypted' if result.encrypted else 'UNENCRYPTED'})"
            f" and {result.public_path}"
        )
        click.echo(f"key id {result.keyid}")


@main.group()
def trust() -> None:
    """Trust roots: which keys an offline host accepts."""


@trust.command("init")
@click.option("--key", "keys", multiple=True, required=True, type=click.Path(path_type=Path))
@click.option("--threshold", type=int, default=1, show_default=True)
@click.option("--expires", required=True, help="YYYY-MM-DD or RFC 3339 UTC time.")
@click.option("--product", "products", multiple=True, help="Restrict to these products (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def trust_init(
    keys: tuple[Path, ...], threshold: int, expires: str, products: tuple[str, ...], out: Path, as_json: bool
) -> None:
    """Write a trust root listing KEYs, of which THRESHOLD must sign each kit."""
    with _errors(as_json):
        root = keys_op.trust_init(list(keys), threshold=threshold, expires=expires, products=products, out=out)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "out": str(out),
                "threshold": root.threshold,
                "keyids": [k.keyid for k in root.keys],
                "expires": timefmt.format_utc(root.expires),
            }
        )
    else:
        click.echo(
            f"wrote {out}: {len(root.keys)} key(s), threshold {root.threshold},"
            f" expires {timefmt.format_utc(root.expires)}"
        )


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
    default=-1,
    show_default=True,
    help="zstd workers; -1 = one per CPU. Any value >= 1 gives identical bytes; 0 differs.",
)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def build(spec: Path, keys: tuple[Path, ...], out: Path, level: int, threads: int, quiet: bool, as_json: bool) -> None:
    """Build and sign a kit from SPEC."""
    with _errors(as_json):
        private_keys = [keys_op.load_private(k) for k in keys]
        options = build_op.BuildOptions(
            level=level, threads=threads, source_date_epoch=build_op.source_date_epoch_from_env()
        )
        with byte_progress("build", None, enabled=progress_enabled(quiet or as_json)) as bar:
            result = build_op.build_kit(
                spec,
                keys=private_keys,
                output=out,
                options=options,
                on_bytes=bar.advance if bar else None,
                on_start=bar.set_total if bar else None,
            )
    manifest = result.manifest
    if as_json:
        _emit_json(
            {
                "ok": True,
                "out": str(out),
                "bytes": result.kit_size,
                "files": len(manifest.files),
                "payloadBytes": manifest.payload_bytes,
                "signers": list(result.signers),
                "kit": manifest.kit.to_json(),
            }
        )
    else:
        kit = manifest.kit
        click.echo(
            f"built {out}: {kit.name} {kit.version} (sequence {kit.sequence}), {len(manifest.files)} files, "
            f"{manifest.payload_bytes} bytes → {result.kit_size} bytes"
        )
        for keyid in result.signers:
            click.echo(f"signed by {keyid}")


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@with_trust
@click.option("--product", help="Refuse kits for another product.")
@click.option("--channel", help="Refuse kits for another channel.")
@click.option("--now", "now_text", help="Judge expiry at this time instead of the clock (RFC 3339).")
@click.option("--max-members", type=int, default=Caps.max_members, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def verify(
    kit: Path,
    keys: tuple[Path, ...],
    trust_root: Path | None,
    threshold: int | None,
    product: str | None,
    channel: str | None,
    now_text: str | None,
    max_members: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Verify KIT offline against locally held keys; exit 0 only if every check passes."""
    with _errors(as_json):
        now = _now(now_text)
        options = verify_op.VerifyOptions(
            policy=_policy(keys, trust_root, threshold, now),
            now=now,
            product=product,
            channel=channel,
            caps=Caps(max_members=max_members),
        )
        size = kit.stat().st_size if kit.exists() else None
        with byte_progress("verify", size, enabled=progress_enabled(quiet or as_json)) as bar:
            report = verify_op.verify_kit(kit, options, on_bytes=bar.advance if bar else None)
    if as_json:
        _emit_json(report.to_json())
        return
    info = report.manifest.kit
    click.echo(f"OK {kit}: {info.name} {info.version} sequence {info.sequence} ({info.product}/{info.channel})")
    for check in report.checks:
        click.echo(f"  ✓ {check}")
    for keyid in report.signers:
        click.echo(f"  signed by {keyid}")
    click.echo(f"  sha256 {report.kit_sha256}")


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@with_trust
@click.option("--now", "now_text", help="Judge trust-root expiry at this time (RFC 3339).")
@click.option("--json", "as_json", is_flag=True)
def inspect(
    kit: Path,
    keys: tuple[Path, ...],
    trust_root: Path | None,
    threshold: int | None,
    now_text: str | None,
    as_json: bool,
) -> None:
    """Show what KIT contains, reading only its index and metadata."""
    with _errors(as_json):
        policy = _policy(keys, trust_root, threshold, _now(now_text)) if keys or trust_root else None
        report = inspect_op.inspect_kit(kit, policy=policy)
    document = report.to_json()
    if as_json:
        _emit_json(document)
    else:
        _render_inspect(document)
    if report.verification_error is not None:
        click.echo(f"kit: trust error: {report.verification_error}", err=True)
        sys.exit(EXIT_CODES["trust"])


def _render_inspect(document: dict[str, Any]) -> None:
    kit = document["kit"]
    click.echo(f"{kit['name']} {kit['version']}  sequence {kit['sequence']}  {kit['product']}/{kit['channel']}")
    click.echo(f"expires {kit['expires']}" + (f"  created {kit['created']}" if kit.get("created") else ""))
    click.echo(f"{kit['bytes']} bytes on disk, {document['payloadBytes']} bytes of payload")
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


if __name__ == "__main__":
    main()
