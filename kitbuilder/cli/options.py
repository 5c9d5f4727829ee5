"""Options several commands share, parsed into one typed value each (trust, registry, database)."""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kitbuilder.archive.locate import Caps
from kitbuilder.core import timefmt
from kitbuilder.errors import UsageError

if TYPE_CHECKING:
    # Loaded by the methods that build them: every command imports this module, and `kit inspect` needs
    # neither a registry nor a full verification's options (start-up is part of every command's time).
    from kitbuilder.ops.attestations import KeylessCheck
    from kitbuilder.ops.pushing import RegistryAccess
    from kitbuilder.ops.trust_choices import TrustChoices

json_option = click.option("--json", "as_json", is_flag=True)
quiet_option = click.option("--quiet", "-q", is_flag=True)


def parse_now(value: str | None) -> datetime:
    """``--now``: an RFC 3339 UTC time, or the clock when not given."""
    if value is None:
        return datetime.now(UTC)
    try:
        return timefmt.parse_utc(value)
    except ValueError as exc:
        raise UsageError(f"--now {value}: {exc}") from exc


@dataclass(frozen=True)
class TrustArgs:
    """The trust and policy options as given; ``inputs()`` parses them (inside the error mapping)."""

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

    def inputs(self, *, trust_optional: bool = False) -> TrustChoices:
        """The typed trust inputs the operations take; raises UsageError for a bad --now.

        With ``trust_optional`` (commands that read metadata without keys), --now is only judged when keys
        or a trust root are given: without them nothing expires.
        """
        from kitbuilder.ops.trust_choices import TrustChoices

        given = bool(self.keys) or self.trust_root is not None
        return TrustChoices(
            keys=self.keys,
            trust_root=self.trust_root,
            threshold=self.threshold,
            product=self.product,
            channel=self.channel,
            now=parse_now(self.now_text if given or not trust_optional else None),
            state_dir=self.state_dir,
            no_state=self.no_state,
            allow_downgrade=self.allow_downgrade,
            max_members=self.max_members,
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

    return apply_decorators(_TRUST_OPTIONS)(wrapper)


def apply_decorators(options: tuple[Any, ...]) -> Callable[[Any], Any]:
    """Apply several click options at once, in the order listed (as if written one above the other)."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def keyless_check(
    bundle: Path | None, trusted_root: Path | None, identity: str | None, issuer: str | None
) -> KeylessCheck | None:
    """The keyless Sigstore options: all four or none; raises UsageError naming the missing ones."""
    given = {
        "--sigstore-bundle": bundle,
        "--trusted-root": trusted_root,
        "--cert-identity": identity,
        "--cert-oidc-issuer": issuer,
    }
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise UsageError(f"keyless Sigstore verification needs {', '.join(missing)} as well")
    if bundle is None or trusted_root is None or identity is None or issuer is None:
        return None
    from kitbuilder.ops.attestations import KeylessCheck

    return KeylessCheck(bundle, trusted_root, identity, issuer)


@dataclass(frozen=True)
class RegistryArgs:
    """How to reach the registry: TLS checking and credentials, as given on the command line."""

    tls_verify: bool
    ca_cert: Path | None
    username: str | None
    password_stdin: bool

    def access(self) -> RegistryAccess:
        """The typed access, reading the password once (standard input, else $KIT_REGISTRY_PASSWORD)."""
        from kitbuilder.ops.pushing import RegistryAccess

        return RegistryAccess(
            tls_verify=self.tls_verify, ca_cert=self.ca_cert, username=self.username, password=self._password()
        )

    def _password(self) -> str | None:
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

    return apply_decorators(_REGISTRY_OPTIONS)(wrapper)


db_option = click.option(
    "--db",
    "db_url",
    required=True,
    envvar="KIT_DB_URL",
    show_envvar=True,
    help="sqlite:///PATH or a file path (SQLite), or postgresql://… (keep passwords out of it: libpq reads "
    "PGPASSWORD, PGPASSFILE and service files; see docs/apply.md).",
)


class FiniteRange(click.FloatRange):
    """A float in [min, max], refusing ``nan`` (which passes every comparison, so FloatRange lets it through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


# PostgreSQL's lock_timeout holds at most 2^31 - 1 milliseconds: a longer wait would be honoured by SQLite and
# refused by the server (a database error after connecting), so one bound for every database.
LONGEST_LOCK_TIMEOUT = 2_147_483

lock_option = click.option(
    "--lock-timeout",
    type=FiniteRange(0, LONGEST_LOCK_TIMEOUT),
    default=30.0,
    show_default=True,
    help=f"Seconds to wait for another apply to finish (0 to {LONGEST_LOCK_TIMEOUT}).",
)
