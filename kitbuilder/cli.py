"""The ``kit`` command: parse arguments, call one operation, render, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from kitbuilder import __version__
from kitbuilder.archive.reader import Caps
from kitbuilder.atomic import action_for
from kitbuilder.core import text, timefmt
from kitbuilder.errors import EXIT_CODES, HostIOError, InterruptedRun, KitError, UsageError
from kitbuilder.ops import keys as keys_op
from kitbuilder.ops import verify as verify_op
from kitbuilder.ops.trust_inputs import file_freshness
from kitbuilder.progress import byte_progress, progress_enabled, row_progress
from kitbuilder.trust.keys import KEY_TYPES
from kitbuilder.trust.signatures import TrustPolicy

if TYPE_CHECKING:
    from kitbuilder.apply.results import ApplyReport


def _emit_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _one_line(message: str) -> str:
    """A message as one printable line: text from a kit (key ids, hints, image names) cannot add lines or escapes."""
    return text.printable(message)


def _fail(error: KitError, *, as_json: bool) -> NoReturn:
    # Reporting must not fail in turn (stdout on the disk that just filled up): the exit code still says it all.
    with contextlib.suppress(OSError):
        if as_json:
            document: dict[str, Any] = dict(error.details or {})
            failure = {"kind": error.kind, "exitCode": error.exit_code, "message": _one_line(str(error))}
            document.update({"ok": False, "error": failure})
            _emit_json(document)
    with contextlib.suppress(OSError):
        click.echo(f"kit: {error.kind} error: {_one_line(str(error))}", err=True)
    sys.exit(error.exit_code)


def _environment_error(exc: OSError, *, unnamed: str = "(unknown path)") -> HostIOError:
    """An OSError no site turned into a KitError: the host refused something (exit 12), never a bug (70).

    Each writing site names its own path and action (kitbuilder.atomic); this is the net under them.
    """
    where = exc.filename if exc.filename is not None else unnamed
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return HostIOError.from_os_error(exc, path=where, action=action_for(exc))


@contextlib.contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """The one place where library errors become messages and exit codes."""
    try:
        yield
    except KitError as error:
        _fail(error, as_json=as_json)
    except KeyboardInterrupt:
        if as_json:
            _emit_json({"ok": False, "error": {"kind": "interrupted", "exitCode": 130, "message": "interrupted"}})
        click.echo("kit: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KIT_DEBUG"):
            raise
        if isinstance(exc, OSError):
            _fail(_environment_error(exc), as_json=as_json)
        # A bug, not a user error: say so in one line; KIT_DEBUG=1 shows the traceback.
        message = _one_line(f"{type(exc).__name__}: {exc} (rerun with KIT_DEBUG=1 and report it)")
        if as_json:
            failure = {"kind": "internal", "exitCode": EXIT_CODES["internal"], "message": message}
            _emit_json({"ok": False, "error": failure})
        click.echo(f"kit: internal error: {message}", err=True)
        sys.exit(EXIT_CODES["internal"])


def _terminated(signal_number: int, frame: object) -> None:
    # SIGTERM's default ends the process on the spot: no line on stderr and temporary files left behind.
    # Raised as an error instead, it unwinds like Ctrl-C: each open output discards its temporary file.
    # (`kit apply` installs its own handler for the run, which stops at a safe point, and restores this one.)
    raise InterruptedRun(
        "stopped by SIGTERM; nothing was left under a final name, rerun the same command", signal_number=signal_number
    )


class _KitGroup(click.Group):
    """The ``kit`` group: an OSError outside ``_errors`` (printing a report to a full disk) is one line, exit 12."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            return super().invoke(ctx)
        except OSError as exc:
            # EPIPE: whoever read stdout went away (`kit … | head`); click ends quietly, as other tools do.
            if exc.errno == errno.EPIPE or os.environ.get("KIT_DEBUG"):
                raise
            _fail(_environment_error(exc, unnamed="standard output"), as_json=False)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return timefmt.parse_utc(value)
    except ValueError as exc:
        raise UsageError(f"--now {value}: {exc}") from exc


@dataclass(frozen=True)
class TrustArgs:
    """The trust and policy options shared by every command that reads a kit."""

    keys: tuple[Path, ...]
    trust_root: Path | None
    threshold: int | None
    product: str | None
    channel: str | None
    now_text: str | None
    state_dir: Path | None = None
    no_state: bool = False
    allow_downgrade: bool = False
    max_members: int = Caps.max_members

    @property
    def given(self) -> bool:
        return bool(self.keys) or self.trust_root is not None

    def policy(self, now: datetime) -> TrustPolicy:
        return keys_op.trust_policy(list(self.keys), self.trust_root, self.threshold, now=now)

    def verify_options(self, caps: Caps | None = None) -> verify_op.VerifyOptions:
        now = _now(self.now_text)
        freshness = None
        if not self.no_state:
            freshness = file_freshness(self.state_dir, allow_downgrade=self.allow_downgrade)
        return verify_op.VerifyOptions(
            policy=self.policy(now),
            now=now,
            product=self.product,
            channel=self.channel,
            caps=caps or Caps(max_members=self.max_members),
            freshness=freshness,
        )


_TRUST_OPTIONS = (
    click.option(
        "--key", "keys", multiple=True, type=click.Path(path_type=Path), help="Trusted public key (PEM); repeatable."
    ),
    click.option("--trust-root", type=click.Path(path_type=Path), help="Trust root JSON from `kit trust init`."),
    click.option("--threshold", type=int, help="With --key: distinct signers required (default: all keys given)."),
    click.option("--product", help="Refuse kits for another product."),
    click.option("--channel", help="Refuse kits for another channel."),
    click.option("--now", "now_text", help="Judge expiry at this time instead of the clock (RFC 3339)."),
    click.option(
        "--max-members",
        type=click.IntRange(min=1),
        default=Caps.max_members,
        show_default=True,
        help="Most members a kit may have; each costs about 1.2 KiB of memory while the index is read.",
    ),
    click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        help="Anti-rollback state (highest sequence, latest time seen). Default: $KIT_STATE_DIR, else "
        "$XDG_STATE_HOME/kitbuilder.",
    ),
    click.option("--no-state", is_flag=True, help="Neither check nor record anti-rollback state."),
    click.option("--allow-downgrade", is_flag=True, help="Accept an older sequence than already seen (reported)."),
)


def trust_options(func: Any) -> Any:
    """Add the trust/policy options to a command and hand them to it as one ``trust: TrustArgs``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        keys: tuple[Path, ...],
        trust_root: Path | None,
        threshold: int | None,
        product: str | None,
        channel: str | None,
        now_text: str | None,
        state_dir: Path | None,
        no_state: bool,
        allow_downgrade: bool,
        max_members: int,
        **kwargs: Any,
    ) -> Any:
        trust = TrustArgs(
            keys, trust_root, threshold, product, channel, now_text, state_dir, no_state, allow_downgrade, max_members
        )
        return func(*args, trust=trust, **kwargs)

    return _apply_decorators(_TRUST_OPTIONS)(wrapper)


def _apply_decorators(options: tuple[Any, ...]) -> Callable[[Any], Any]:
    """Apply several click options at once, in the order listed (as if written one above the other)."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(cls=_KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kit")
def main() -> None:
    """Build, sign, verify, inspect, apply and patch offline kits. Exit codes: docs/exit-codes.md."""
    # Drivers log their own warnings (psycopg reports a dropped pipeline); the error kit raises
    # already says what happened, in one line, so library log records are not printed.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    logging.getLogger("psycopg").propagate = False


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


@trust.command("rotate")
@click.option("--trust-root", "current", required=True, type=click.Path(path_type=Path), help="The current root.")
@click.option(
    "--key", "keys", multiple=True, required=True, type=click.Path(path_type=Path), help="Keys of the new root."
)
@click.option("--threshold", type=int, default=1, show_default=True)
@click.option("--expires", required=True)
@click.option("--product", "products", multiple=True)
@click.option(
    "--sign-key",
    "sign_keys",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Private keys signing the new root: a threshold of the current root's and of the new root's.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def trust_rotate(
    current: Path,
    keys: tuple[Path, ...],
    threshold: int,
    expires: str,
    products: tuple[str, ...],
    sign_keys: tuple[Path, ...],
    out: Path,
    as_json: bool,
) -> None:
    """Write the next trust root version, signed by the old and the new keys (TUF-style rotation)."""
    with _errors(as_json):
        root = keys_op.trust_rotate(
            current,
            list(keys),
            threshold=threshold,
            expires=expires,
            products=products,
            signing_key_paths=list(sign_keys),
            out=out,
        )
    if as_json:
        _emit_json({"ok": True, "out": str(out), "version": root.version, "keyids": [k.keyid for k in root.keys]})
    else:
        click.echo(f"wrote {out}: version {root.version}, {len(root.keys)} key(s), threshold {root.threshold}")


@trust.command("update")
@click.option(
    "--trust-root", "current", required=True, type=click.Path(path_type=Path), help="The host's current root."
)
@click.argument("successor", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write here instead of replacing --trust-root.")
@click.option("--json", "as_json", is_flag=True)
def trust_update(current: Path, successor: Path, out: Path | None, as_json: bool) -> None:
    """Accept SUCCESSOR as the next root: it must be signed by a threshold of the current keys and its own."""
    with _errors(as_json):
        root = keys_op.trust_update(current, successor, out=out)
    if as_json:
        _emit_json({"ok": True, "version": root.version, "keyids": [k.keyid for k in root.keys]})
    else:
        click.echo(f"trust root is now version {root.version} ({len(root.keys)} key(s), threshold {root.threshold})")


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
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def build(
    spec: Path,
    keys: tuple[Path, ...],
    out: Path,
    level: int,
    threads: int | None,
    delta_from: Path | None,
    full_out: Path | None,
    builder_id: str | None,
    no_provenance: bool,
    sigstore_bundle: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Build and sign a kit from SPEC (or, with --delta-from, a delta kit against a base)."""
    from kitbuilder.ops import build as build_op

    with _errors(as_json):
        private_keys = [keys_op.load_private(k) for k in keys]
        options = build_op.BuildOptions(
            level=level,
            threads=threads,
            source_date_epoch=build_op.source_date_epoch_from_env(),
            builder_id=builder_id,
            provenance=not no_provenance,
            sigstore_bundle=sigstore_bundle,
        )
        if delta_from is not None:
            from kitbuilder.ops import delta as delta_op

            delta = delta_op.build_delta(
                spec, keys=private_keys, base_path=delta_from, output=out, full_output=full_out, options=options
            )
            document = {
                "ok": True,
                "out": str(out),
                "delta": True,
                "bytes": delta.delta_bytes,
                "added": list(delta.added),
                "changed": list(delta.changed),
                "removed": list(delta.removed),
                "reusedFromBase": delta.reused,
                "fullOut": str(full_out) if full_out else None,
            }
            if as_json:
                _emit_json(document)
            else:
                click.echo(
                    f"built delta {out}: {len(delta.added)} added, {len(delta.changed)} changed, "
                    f"{len(delta.removed)} removed, {delta.reused} reused from {delta_from}; "
                    f"{delta.delta_bytes} bytes"
                )
            return
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
                "sha256": result.kit_sha256,
                "metadata": list(result.metadata),
                "provenance": str(result.detached_provenance) if result.detached_provenance else None,
                "images": list(manifest.images),
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
        for name in result.metadata:
            click.echo(f"with {name}")
        if result.detached_provenance is not None:
            click.echo(f"provenance for the kit file: {result.detached_provenance}")


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
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
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
    with _errors(as_json):
        keyless_args = {
            "--sigstore-bundle": sigstore_bundle,
            "--trusted-root": trusted_root,
            "--cert-identity": cert_identity,
            "--cert-oidc-issuer": cert_oidc_issuer,
        }
        missing = [name for name, value in keyless_args.items() if value is None]
        if missing and len(missing) < len(keyless_args):
            raise UsageError(f"keyless Sigstore verification needs {', '.join(missing)} as well")
        keyless = None
        if not missing:
            assert sigstore_bundle and trusted_root and cert_identity and cert_oidc_issuer
            keyless = verify_op.KeylessCheck(sigstore_bundle, trusted_root, cert_identity, cert_oidc_issuer)
        options = dataclasses.replace(
            trust.verify_options(),
            require_provenance=require_provenance,
            detached_attestations=attestations,
            keyless=keyless,
        )
        size = kit.stat().st_size if kit.exists() else None
        with byte_progress("verify", size, enabled=progress_enabled(quiet or as_json)) as bar:
            report = verify_op.verify_kit(kit, options, on_bytes=bar.advance if bar else None)
    if as_json:
        _emit_json(report.to_json())
        return
    info = report.manifest.kit
    click.echo(
        f"OK {kit}: {info.name} {text.printable(info.version)} sequence {info.sequence} ({info.product}/{info.channel})"
    )
    for check in report.checks:
        click.echo(f"  ✓ {text.printable(check)}")
    for keyid in report.signers:
        click.echo(f"  signed by {keyid}")
    click.echo(f"  sha256 {report.kit_sha256}")


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--sbom", "show_sbom", is_flag=True, help="Summarise the kit SBOM: components, licenses, suppliers.")
@click.option("--provenance", "show_provenance", is_flag=True, help="Show the SLSA provenance: builder, inputs, times.")
@click.option("--images", "show_images", is_flag=True, help="Check and show the container images (OCI layout).")
@click.option("--json", "as_json", is_flag=True)
def inspect(
    kit: Path,
    trust: TrustArgs,
    show_sbom: bool,
    show_provenance: bool,
    show_images: bool,
    as_json: bool,
) -> None:
    """Show what KIT contains, reading only its index and metadata."""
    from kitbuilder.ops import inspect as inspect_op

    with _errors(as_json):
        policy = trust.policy(_now(trust.now_text)) if trust.given else None
        report = inspect_op.inspect_kit(
            kit,
            policy=policy,
            sbom=show_sbom,
            provenance=show_provenance,
            images=show_images,
            caps=Caps(max_members=trust.max_members),
        )
    document = report.to_json()
    if as_json:
        _emit_json(document)
    else:
        _render_inspect(text.printable_tree(document))
    if report.verification_error is not None:
        click.echo(f"kit: signatures not verified: {_one_line(report.verification_error)}", err=True)
        sys.exit(report.verification_exit_code)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--subject", help="Extract the shipped SBOM describing this component (its spec subject or id).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here (atomically) instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="With -o: print a JSON summary of what was written.")
def sbom(kit: Path, trust: TrustArgs, subject: str | None, output: Path | None, as_json: bool) -> None:
    """Extract an SBOM from KIT without unpacking it: the kit's own, or a shipped one (--subject)."""
    from kitbuilder.ops import sbom as sbom_op

    with _errors(as_json):
        if as_json and output is None:
            raise UsageError("--json describes the file written with -o; without -o the SBOM itself is printed")
        policy = trust.policy(_now(trust.now_text)) if trust.given else None
        extracted = sbom_op.extract_sbom(kit, policy=policy, subject=subject, caps=Caps(max_members=trust.max_members))
        if output is not None:
            sbom_op.save_sbom(extracted, output)
    # The SBOM first: if stdout cannot take it, that error is the only line on stderr.
    if output is None:
        sys.stdout.buffer.write(extracted.data)
        sys.stdout.buffer.flush()
    if not extracted.verified:
        click.echo("kit: signatures not verified (pass --key or --trust-root); digest matches the manifest", err=True)
    if output is not None and as_json:
        _emit_json({"ok": True, **extracted.to_json(), "out": str(output)})
    elif output is not None:
        click.echo(f"wrote {output}: {extracted.path} ({extracted.format}, {len(extracted.data)} bytes)")


@main.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@trust_options
@click.option("--json", "as_json", is_flag=True)
def diff(old: Path, new: Path, trust: TrustArgs, as_json: bool) -> None:
    """What changed from OLD to NEW: files, kit fields, components, checks, signers (metadata only)."""
    from kitbuilder.ops import diff as diff_op

    with _errors(as_json):
        policy = trust.policy(_now(trust.now_text)) if trust.given else None
        document = diff_op.diff_kits(old, new, policy=policy, caps=Caps(max_members=trust.max_members)).to_json()
    if as_json:
        _emit_json({"ok": True, **document})
        return
    document = text.printable_tree(document)
    click.echo(
        f"{document['old']['name']} {document['old']['version']} (sequence {document['old']['sequence']}) → "
        f"{document['new']['name']} {document['new']['version']} (sequence {document['new']['sequence']})"
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


@main.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("delta", type=click.Path(path_type=Path))
@trust_options
@click.option("--out", type=click.Path(path_type=Path), help="Write the new kit here.")
@click.option("--in-place", is_flag=True, help="Replace BASE atomically with the new kit.")
@click.option("--json", "as_json", is_flag=True)
def patch(base: Path, delta: Path, trust: TrustArgs, out: Path | None, in_place: bool, as_json: bool) -> None:
    """Apply DELTA to BASE: copy unchanged frames verbatim, check every member, replace atomically."""
    from kitbuilder.ops import patch_file

    with _errors(as_json):
        if (out is None) == (not in_place):
            raise UsageError("give exactly one of --out NEW or --in-place")
        if base.is_dir():
            from kitbuilder.ops import patch_dir

            if not in_place:
                raise UsageError(f"{base} is an installed kit directory: patch it with --in-place")
            directory = patch_dir.patch_directory(
                base, delta, options=trust.verify_options(), allow_downgrade=trust.allow_downgrade
            )
            kit = directory.manifest.kit
            document: dict[str, Any] = {
                "ok": True,
                "out": str(base),
                "directory": True,
                "kit": kit.to_json(),
                "reused": directory.reused,
                "written": directory.written,
                "removed": directory.removed,
                "rolledForward": directory.rolled_forward,
                "alreadyPatched": directory.already_patched,
            }
        else:
            target = base if in_place else out
            assert target is not None
            result = patch_file.patch_kit(
                base, delta, output=target, options=trust.verify_options(), allow_downgrade=trust.allow_downgrade
            )
            kit = result.manifest.kit
            document = {
                "ok": True,
                "out": str(result.output),
                "directory": False,
                "kit": kit.to_json(),
                "copiedFromBase": result.copied_from_base,
                "copiedFromDelta": result.copied_from_delta,
                "bytes": result.bytes_written,
                "alreadyPatched": result.already_patched,
            }
    if as_json:
        _emit_json(document)
    elif document["alreadyPatched"]:
        where = f"{base}/" if document["directory"] else document["out"]
        rolled = " (an interrupted patch was finished first)" if document.get("rolledForward") else ""
        click.echo(
            f"already patched: {where} is {kit.name} {text.printable(kit.version)} (sequence {kit.sequence}){rolled}"
        )
    elif document["directory"]:
        click.echo(
            f"patched {base}/: {kit.name} {text.printable(kit.version)} (sequence {kit.sequence}); "
            f"{document['reused']} files kept (re-hashed), {document['written']} written, {document['removed']} removed"
        )
    else:
        click.echo(
            f"patched {document['out']}: {kit.name} {text.printable(kit.version)} (sequence {kit.sequence}); "
            f"{document['copiedFromBase']} frames from base, {document['copiedFromDelta']} from delta, "
            f"{document['bytes']} bytes"
        )


def _render_inspect(document: dict[str, Any]) -> None:
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
        _render_sbom_section(document["sbom"])
    if "provenance" in document:
        _render_provenance_section(document["provenance"])
    if "images" in document:
        _render_images_section(document["images"])


def _render_counts(label: str, counts: dict[str, int]) -> None:
    if counts:
        click.echo(f"  {label}: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    else:
        click.echo(f"  {label}: none stated")


def _render_sbom_section(section: dict[str, Any]) -> None:
    kit_sbom = section.get("kitSbom")
    if kit_sbom is None:
        click.echo("SBOM: this kit has no sbom/kit.cdx.json")
    else:
        click.echo(
            f"SBOM {kit_sbom['path']} (CycloneDX {kit_sbom['specVersion']}, {kit_sbom['serialNumber']}): "
            f"{kit_sbom['componentCount']} components; "
            + ("lists exactly the manifest's files" if kit_sbom["matchesManifest"] else "DIFFERS from the manifest")
        )
        _render_counts("by type", kit_sbom["byType"])
        _render_counts("licenses", kit_sbom["licenses"])
        _render_counts("suppliers", kit_sbom["suppliers"])
    for shipped in section.get("shipped", []):
        click.echo(
            f"  shipped: {shipped['path']} ({shipped['format']} {shipped['specVersion']}) "
            f"describes {shipped['subject']}: {shipped['componentCount']} components"
        )
        _render_counts("  licenses", shipped["licenses"])
        _render_counts("  suppliers", shipped["suppliers"])


def _render_provenance_section(section: dict[str, Any]) -> None:
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


def _render_images_section(section: dict[str, Any]) -> None:
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


@main.group()
def images() -> None:
    """Container images in a kit: export them as an OCI layout, or push them into a registry."""


@dataclass(frozen=True)
class RegistryArgs:
    """How to reach the registry: TLS checking and credentials, as given on the command line."""

    tls_verify: bool
    ca_cert: Path | None
    username: str | None
    password_stdin: bool

    def password(self) -> str | None:
        if self.password_stdin:
            if self.username is None:
                raise UsageError("--password-stdin needs --username")
            return sys.stdin.readline().rstrip("\r\n")
        return os.environ.get("KIT_REGISTRY_PASSWORD") if self.username else None


_REGISTRY_OPTIONS = (
    click.option("--tls-verify/--no-tls-verify", default=True, show_default=True, help="Check the registry's TLS."),
    click.option("--ca-cert", type=click.Path(path_type=Path), help="CA certificate (PEM) for the registry's TLS."),
    click.option("--username", help="Registry user (password from --password-stdin or $KIT_REGISTRY_PASSWORD)."),
    click.option("--password-stdin", is_flag=True, help="Read the registry password from standard input."),
)


def registry_options(func: Any) -> Any:
    """Add the registry connection options to a command and hand them to it as one ``registry_args``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any, tls_verify: bool, ca_cert: Path | None, username: str | None, password_stdin: bool, **kwargs: Any
    ) -> Any:
        return func(*args, registry_args=RegistryArgs(tls_verify, ca_cert, username, password_stdin), **kwargs)

    return _apply_decorators(_REGISTRY_OPTIONS)(wrapper)


def _push(
    kit: Path,
    registry: str,
    options: verify_op.VerifyOptions,
    connection: RegistryArgs,
    *,
    refs: tuple[str, ...],
    quiet: bool,
) -> dict[str, Any]:
    from kitbuilder.ops import images as images_op

    with byte_progress(f"push {registry}", None, enabled=progress_enabled(quiet)) as bar:
        result = images_op.push_images(
            kit,
            registry,
            options,
            tls_verify=connection.tls_verify,
            ca_cert=connection.ca_cert,
            username=connection.username,
            password=connection.password(),
            refs=refs or None,
            on_bytes=bar.advance if bar else None,
            on_start=bar.set_total if bar else None,
        )
    return result.to_json()


@images.command("push")
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@click.option("--registry", required=True, help="HOST[:PORT] of the registry; no other host is contacted.")
@click.option("--ref", "refs", multiple=True, help="Push only this image (its reference in the kit); repeatable.")
@registry_options
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
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
    with _errors(as_json):
        document = _push(kit, registry, trust.verify_options(), registry_args, refs=refs, quiet=quiet or as_json)
    if as_json:
        _emit_json({"ok": True, **document})
        return
    _render_push(document)


def _render_push(document: dict[str, Any]) -> None:
    for image in document["images"]:
        click.echo(
            f"pushed {image['pushedAs']}@{image['digest']}: {image['blobsSent']} blobs sent "
            f"({image['bytesSent']} bytes), {image['blobsSkipped']} already there, {image['blobsMounted']} mounted"
        )


@images.command("export")
@click.argument("kit", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@trust_options
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def images_export(kit: Path, out_dir: Path, trust: TrustArgs, quiet: bool, as_json: bool) -> None:
    """Verify KIT, then write its images to OUT_DIR as a plain OCI image layout (skopeo, umoci, podman read it)."""
    from kitbuilder.ops import images as images_op

    with _errors(as_json):
        options = trust.verify_options()
        with byte_progress("export", None, enabled=progress_enabled(quiet or as_json)) as bar:
            result = images_op.export_images(kit, out_dir, options, on_bytes=bar.advance if bar else None)
    document = result.to_json()
    if as_json:
        _emit_json({"ok": True, **document})
        return
    click.echo(f"exported {len(document['images'])} image(s) to {out_dir} ({document['bytes']} bytes)")
    for image in document["images"]:
        click.echo(f"  {image['ref']}  {image['digest']}")


db_option = click.option(
    "--db",
    "db_url",
    required=True,
    envvar="KIT_DB_URL",
    show_envvar=True,
    help="sqlite:///PATH or a file path (SQLite), or postgresql://… (keep passwords out of it: libpq reads "
    "PGPASSWORD, PGPASSFILE and service files; see docs/apply.md).",
)
lock_option = click.option(
    "--lock-timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for another apply to finish."
)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@db_option
@click.option("--dry-run", is_flag=True, help="Show the plan, SQL and backfill counts; change nothing.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Rows per backfill batch (default: the job's, else 500)."
)
@click.option("--tenant", help="Limit backfills to this tenant.")
@click.option("--stop-on-error", is_flag=True, help="Stop a backfill at its first failing row.")
@click.option("--error-rate", type=click.FloatRange(0, 1), help="Pause a backfill above this failed-row rate (0.01).")
@click.option("--min-sample", type=click.IntRange(min=1), help="Rows seen before the error rate counts (100).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Backfill workers in parallel, each on its own key range and connection (PostgreSQL).",
)
@lock_option
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the run's evidence directory is written [default: artifacts]; with --dry-run, only when given.",
)
@click.option("--registry", help="Also push the kit's images to this registry (HOST[:PORT]) after applying.")
@registry_options
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def apply(
    kit: Path,
    trust: TrustArgs,
    db_url: str,
    dry_run: bool,
    batch_size: int | None,
    tenant: str | None,
    stop_on_error: bool,
    error_rate: float | None,
    min_sample: int | None,
    workers: int,
    lock_timeout: float,
    artifacts: Path | None,
    registry: str | None,
    registry_args: RegistryArgs,
    quiet: bool,
    as_json: bool,
) -> None:
    """Verify KIT, then apply its migrations, seeds and backfills to --db, writing evidence."""
    from kitbuilder.apply.context import ApplyOptions
    from kitbuilder.ops import apply as apply_op

    with _errors(as_json):
        verify_options = trust.verify_options()
        options = ApplyOptions(
            dry_run=dry_run,
            batch_size=batch_size,
            tenant=tenant,
            stop_on_error=stop_on_error,
            error_rate_threshold=error_rate,
            min_sample=min_sample,
            lock_timeout=lock_timeout,
            workers=workers,
        )

        def check_registry() -> None:
            # Reach the registry and check TLS and credentials once the kit is verified and before the database
            # changes: a registry problem found only after the apply would leave the run half done.
            from kitbuilder.oci.registry import RegistryClient, RetryPolicy, TransferOptions

            assert registry is not None
            with RegistryClient(
                registry,
                tls_verify=registry_args.tls_verify,
                ca_cert=registry_args.ca_cert,
                username=registry_args.username,
                password=registry_args.password(),
                options=TransferOptions(retry=RetryPolicy(attempts=2)),  # a check, not a transfer: fail fast
            ) as client:
                client.ping()

        show = progress_enabled(quiet or as_json)
        with row_progress(enabled=show) as bars:
            report = apply_op.apply_kit(
                kit,
                db_url,
                verify_options,
                options,
                argv=sys.argv,
                artifacts=artifacts,
                on_rows=bars.update if bars else None,
                preflight=check_registry if registry is not None and not dry_run else None,
                on_step=(lambda step: click.echo(f"→ {step.kind} {step.id} (phase {step.phase})", err=True))
                if show
                else None,
            )
        if registry is not None and not dry_run:
            # Images go last: a registry problem (exit 11) leaves the applied database as it is; rerun to finish.
            try:
                pushed = _push(kit, registry, verify_options, registry_args, refs=(), quiet=quiet or as_json)
            except KitError as error:
                error.details = report.to_json()  # the database part succeeded: its report is not lost with the push
                raise
            report = dataclasses.replace(report, images=pushed)
    if as_json:
        _emit_json({"ok": True, **report.to_json()})
        return
    _render_apply(report)
    if report.images is not None:
        _render_push(report.images)


def _render_apply(report: ApplyReport) -> None:
    from kitbuilder.apply.results import BackfillResult, DryBackfill, DryStep, MigrationResult, SeedResult

    kit, database = report.kit, report.database
    click.echo(
        f"{kit['name']} {kit['version']} (sequence {kit['sequence']}) → {database['dialect']} ({database['version']})"
        + (f", tenant {report.tenant}" if report.tenant is not None else "")
    )
    if report.status == "dry-run":
        click.echo("dry run: nothing was changed")
        for entry in report.plan:
            if isinstance(entry, DryBackfill):
                tenants = ", ".join(f"{t}: {n}" for t, n in entry.by_tenant.items())
                bound = {"exact": "", "current": " (as of now)", "upper-bound": " (upper bound)"}[entry.count_basis]
                click.echo(
                    f"  backfill  {entry.id:<28} {entry.status:<9} would update {entry.would_update} rows{bound}"
                    + (f" ({tenants})" if tenants else "")
                )
                if entry.count_basis != "exact":
                    click.echo(f"            {text.printable(entry.count_reason)}")
                click.echo(_indent(entry.sql))
            elif isinstance(entry, DryStep):
                click.echo(f"  {entry.kind:<9} {entry.id:<28} {entry.status}")
                if entry.kind == "migration" and entry.status != "applied":
                    click.echo(_indent(entry.sql))
                elif entry.kind == "seed":
                    click.echo(f"            into {entry.table}: {', '.join(entry.files)}")
    else:
        for step in report.steps:
            detail = step.reason or ""
            if isinstance(step, BackfillResult) and step.status == "finished":
                detail = (
                    f"{step.rows_this_run} rows this run ({step.rows_processed} total, {step.rows_failed} "
                    f"quarantined), {step.rows_per_second or 0:,.0f} rows/s"
                )
            elif isinstance(step, SeedResult) and step.status == "succeeded":
                detail = f"{step.rows} rows into {step.table}"
            elif isinstance(step, MigrationResult) and step.status == "succeeded":
                detail = f"{step.duration_ms} ms, verify {step.verify}"
            click.echo(f"  {step.kind:<9} {step.id:<28} {step.status:<9} {detail}")
        for check in report.checks_after:
            mark = "✓" if check.passed else ("!" if check.on_fail == "warn" else "✗")
            click.echo(f"  {mark} check {check.id}: observed {check.observed}, expected {check.expected}")
    if report.deferred is not None:
        click.echo(
            f"deferred to a full apply: {', '.join(report.deferred.steps + report.deferred.checks)} "
            f"({report.deferred.reason})"
        )
    if report.evidence is not None:
        evidence = report.evidence
        marker = " (dry run)" if report.dry_run else ""
        click.echo(f"evidence{marker} {evidence.directory}/report.json (sha256 {evidence.report_sha256})")


def _indent(sql: str) -> str:
    # SQL comes from the kit: each line shown printable (control and format characters escaped).
    return "\n".join(f"      | {text.printable(line)}" for line in sql.strip().splitlines())


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@db_option
@click.option("--to-phase", required=True, help="Keep this phase and earlier; revert later ones ('none' = all).")
@click.option("--dry-run", is_flag=True)
@lock_option
@click.option("--json", "as_json", is_flag=True)
def rollback(
    kit: Path,
    trust: TrustArgs,
    db_url: str,
    to_phase: str,
    dry_run: bool,
    lock_timeout: float,
    as_json: bool,
) -> None:
    """Run revert scripts, newest first, for every phase after --to-phase."""
    from kitbuilder.ops import apply as apply_op

    with _errors(as_json):
        result = apply_op.rollback_kit(
            kit,
            db_url,
            trust.verify_options(),
            to_phase=to_phase,
            lock_timeout=lock_timeout,
            dry_run=dry_run,
        )
    if as_json:
        _emit_json({"ok": True, **result})
        return
    entries = result.get("wouldRevert", result.get("reverted", []))
    click.echo(("would revert" if dry_run else "reverted") + f" {len(entries)} step(s)")
    for entry in entries:
        click.echo(f"  {entry['kind']:<9} {entry['id']:<28} {entry.get('status', '')}")


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True)
def status(db_url: str, as_json: bool) -> None:
    """What is applied, running or paused in --db, with backfill progress."""
    from kitbuilder.ops import apply as apply_op

    with _errors(as_json):
        result = apply_op.status(db_url)
    if as_json:
        _emit_json({"ok": True, **result})
        return
    for row in result["migrations"]:
        click.echo(
            f"  {row['kind']:<9} {row['id']:<28} {row['status']:<10} phase {row['phase']}  {row['finishedAt'] or ''}"
        )
    for row in result["backfills"]:
        click.echo(f"  backfill  {row['job']:<28} {row['status']:<10} {_backfill_progress(row)}")
    lock = result["lock"]
    if lock:
        click.echo(
            f"  lock held by run {lock['runId']} (pid {lock['pid']} on {lock['host']}, lease until {lock['expiresAt']})"
        )
    if not result["migrations"] and not result["backfills"]:
        click.echo("nothing applied")


def _backfill_progress(row: dict[str, Any]) -> str:
    """One status line's worth of a backfill: rows, quarantine, cursor, rate, remaining, ETA, why paused."""
    parts = [f"{row['rowsProcessed']} rows", f"{row['rowsFailed']} quarantined", f"cursor {json.dumps(row['cursor'])}"]
    if row["rowsPerSecond"] is not None:
        parts.append(f"{row['rowsPerSecond']:,.0f} rows/s")
    if row["remaining"] is not None:
        parts.append(f"{row['remaining']} remaining")
    if row["etaSeconds"] is not None:
        parts.append(f"ETA {row['etaSeconds']:.0f}s")
    reason = f"  ({row['pauseReason']})" if row["pauseReason"] else ""
    return ", ".join(parts) + reason


@main.command()
@click.argument("kit", type=click.Path(path_type=Path), required=False)
@trust_options
@db_option
@click.option("--accept-checksum", help="Accept this step's changed checksum (recorded; needs KIT).")
@click.option("--resolve", help="Resolve an interrupted non-transactional migration (needs KIT).")
@click.option("--as", "resolve_as", type=click.Choice(["succeeded", "failed"]))
@click.option("--reset-cursor", help="Restart this backfill's cursor from its first matching row.")
@click.option("--release-lock", is_flag=True, help="Remove a SQLite apply lease left by a run that is gone.")
@click.option("--reason", required=True, help="Why; recorded in kit_events.")
@lock_option
@click.option("--json", "as_json", is_flag=True)
def repair(
    kit: Path | None,
    trust: TrustArgs,
    db_url: str,
    accept_checksum: str | None,
    resolve: str | None,
    resolve_as: str | None,
    reset_cursor: str | None,
    release_lock: bool,
    reason: str,
    lock_timeout: float,
    as_json: bool,
) -> None:
    """Record an operator decision the state tables cannot make alone."""
    from kitbuilder.ops import apply as apply_op

    with _errors(as_json):
        result = apply_op.repair(
            kit,
            db_url,
            trust.verify_options() if kit is not None else None,
            accept_checksum=accept_checksum,
            resolve=resolve,
            resolve_as=resolve_as,
            reset_cursor=reset_cursor,
            release_lock=release_lock,
            reason=reason,
            lock_timeout=lock_timeout,
        )
    if as_json:
        _emit_json({"ok": True, **result})
    else:
        click.echo(f"{result['id']}: {result['detail']}")


if __name__ == "__main__":
    main()
