"""Reading what trust is built from: key files, trust roots, keyless inputs and the anti-rollback state.

``kitbuilder.trust`` decides on bytes and objects only; every file and environment
variable it depends on is read here, each file once, bounded and proven a regular
file (``inputfile.read_small``), then handed over.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kitbuilder import inputfile
from kitbuilder.atomic import os_error, write_atomic
from kitbuilder.errors import FormatError, UsageError
from kitbuilder.trust.freshness import Freshness, Seen
from kitbuilder.trust.keys import PrivateKey, PublicKey, private_from_pem
from kitbuilder.trust.root import RootDocument, TrustRoot
from kitbuilder.trust.signatures import TrustPolicy

if TYPE_CHECKING:
    from kitbuilder.trust.keyless import KeylessResult

PASSPHRASE_ENV = "KIT_PASSPHRASE"
STATE_ENV = "KIT_STATE_DIR"
# Sigstore's public-good trusted root is about 10 KiB, a keyless bundle (certificate, log entry, inclusion
# proof) a few KiB: both limits leave room for a hundred times that.
SIGSTORE_ROOT_BYTES = 1 << 20
KEYLESS_BUNDLE_BYTES = 1 << 20


def read_input(path: Path, *, limit: int, what: str) -> bytes:
    """All of the small input ``path``; UsageError naming it and ``what`` when it cannot be read."""
    try:
        return inputfile.read_small(path, limit=limit, what=what)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.strerror})") from exc


# Keys --------------------------------------------------------------------------------------------------------


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def load_private(path: Path) -> PrivateKey:
    """Read a PKCS#8 PEM private key, decrypting with $KIT_PASSPHRASE when it is encrypted."""
    data = read_input(path, limit=inputfile.KEY_BYTES, what="private key")
    return private_from_pem(
        data, passphrase=passphrase_from_env(), what=str(path), passphrase_source=f"${PASSPHRASE_ENV}"
    )


def load_public(path: Path) -> PublicKey:
    return PublicKey.from_pem(read_input(path, limit=inputfile.KEY_BYTES, what="public key"), what=str(path))


# Trust roots -------------------------------------------------------------------------------------------------


def read_trust_root(path: Path) -> bytes:
    return read_input(path, limit=inputfile.TRUST_ROOT_BYTES, what="trust root")


def load_trust_root(path: Path) -> TrustRoot:
    return TrustRoot.from_bytes(read_trust_root(path), what=str(path))


def load_successor(path: Path) -> tuple[bytes, RootDocument]:
    """The bytes at ``path`` and the signed document they hold: a successor root handed in from outside,
    before any decision about it (the bytes are what a host installs once it is accepted)."""
    try:
        data = inputfile.read_small(path, limit=inputfile.TRUST_ROOT_BYTES, what="trust root")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
    return data, RootDocument.from_bytes(data, what=str(path), not_json=FormatError)


def load_policy(key_paths: list[Path], trust_root: Path | None, threshold: int | None, *, now: datetime) -> TrustPolicy:
    """The policy from --key/--trust-root (exactly one of them must be given), judged at ``now``."""
    if trust_root is not None and key_paths:
        raise UsageError("give either --key or --trust-root, not both")
    if trust_root is not None:
        if threshold is not None:
            raise UsageError("--threshold applies to --key; a trust root carries its own threshold")
        root = load_trust_root(trust_root)
        root.check_current(now, what=str(trust_root))
        return TrustPolicy(keys=root.keys, threshold=root.threshold, products=root.products)
    if not key_paths:
        raise UsageError("no trust given: pass --key PUBKEY (repeatable) or --trust-root trust.json")
    public = [load_public(p) for p in key_paths]
    distinct = {k.keyid: k for k in public}
    wanted = len(distinct) if threshold is None else threshold
    if not 1 <= wanted <= len(distinct):
        raise UsageError(f"--threshold {wanted}: must be between 1 and the number of distinct keys ({len(distinct)})")
    return TrustPolicy(keys=tuple(distinct.values()), threshold=wanted)


# Keyless -----------------------------------------------------------------------------------------------------


def verify_keyless(message: bytes, *, bundle: Path, trusted_root: Path, identity: str, issuer: str) -> KeylessResult:
    """Read the keyless bundle and the pinned Sigstore trusted root, then verify (trust.keyless.verify_keyless)."""
    from kitbuilder.trust import keyless

    return keyless.verify_keyless(
        message,
        bundle=read_input(bundle, limit=KEYLESS_BUNDLE_BYTES, what="Sigstore bundle"),
        trusted_root=read_input(trusted_root, limit=SIGSTORE_ROOT_BYTES, what="trusted root"),
        identity=identity,
        issuer=issuer,
        bundle_what=str(bundle),
        root_what=str(trusted_root),
    )


# Anti-rollback state -----------------------------------------------------------------------------------------


def default_state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kitbuilder"


@dataclass(frozen=True)
class FileFreshnessStore:
    """One small JSON file per kit name and channel in ``directory``, replaced atomically on every record."""

    directory: Path

    @property
    def location(self) -> str:
        return str(self.directory)

    def file(self, name: str, channel: str) -> Path:
        safe = re.sub(r"[^a-z0-9._@-]", "_", f"{name}@{channel}")
        return self.directory / f"{safe}.json"

    def load(self, name: str, channel: str) -> Seen | None:
        path = self.file(name, channel)
        try:
            # Never through a link: the write below replaces the link, so a read through it would judge by a file
            # the next record no longer touches (and a link to /dev/zero or a FIFO would hang verify).
            data = inputfile.read_small(
                path, limit=inputfile.STATE_BYTES, what="anti-rollback state", follow_links=False
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read anti-rollback state ({exc.strerror})") from exc
        return Seen.from_bytes(data, what=str(path))

    def save(self, name: str, channel: str, seen: Seen) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.directory, action="create the anti-rollback state directory") from exc
        write_atomic(self.file(name, channel), seen.to_bytes(name, channel))


def file_freshness(directory: Path | None, *, allow_downgrade: bool) -> Freshness:
    """The anti-rollback checks over the state in ``directory`` (default: $KIT_STATE_DIR, else the XDG state)."""
    return Freshness(FileFreshnessStore(directory or default_state_dir()), allow_downgrade=allow_downgrade)
