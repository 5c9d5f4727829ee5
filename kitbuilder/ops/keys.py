"""kit keygen, kit trust init/rotate/update, and turning key options into a trust policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kitbuilder.atomic import write_atomic, write_atomic_group
from kitbuilder.core import timefmt
from kitbuilder.errors import UsageError
from kitbuilder.ops.trust_inputs import load_policy, load_private, load_public, load_successor, load_trust_root
from kitbuilder.ops.trust_inputs import passphrase_from_env as passphrase_from_env
from kitbuilder.trust import keys
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.root import TrustRoot, check_successor, rotate
from kitbuilder.trust.signatures import TrustPolicy

__all__ = ["keygen", "trust_init", "trust_policy", "trust_rotate", "trust_update", "load_private", "load_public"]


@dataclass(frozen=True)
class KeygenResult:
    keyid: str
    private_path: Path
    public_path: Path
    encrypted: bool


def keygen(key_type: str, prefix: Path, *, force: bool) -> KeygenResult:
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for existing in (private_path, public_path):
        if existing.exists() and not force:
            raise UsageError(f"{existing} exists; pass --force to overwrite")
    key: PrivateKey = keys.generate(key_type)
    passphrase = passphrase_from_env()
    # Both files or neither: a rerun after a full disk finds no lone half of a pair (which it would refuse).
    write_atomic_group(
        [(private_path, keys.private_pem(key, passphrase), 0o600), (public_path, key.public.to_pem(), 0o644)]
    )
    return KeygenResult(
        keyid=key.keyid, private_path=private_path, public_path=public_path, encrypted=passphrase is not None
    )


def _expires(text: str) -> datetime:
    try:
        return timefmt.parse_utc(text)
    except ValueError as exc:
        raise UsageError(f"--expires {text}: {exc}") from exc


def trust_init(
    key_paths: list[Path], *, threshold: int, expires: str, products: tuple[str, ...], out: Path
) -> TrustRoot:
    expires_at = _expires(expires)
    root = TrustRoot.create(
        [load_public(p) for p in key_paths], threshold=threshold, expires=expires_at, products=products
    )
    write_atomic(out, root.to_bytes())
    return root


def trust_policy(
    key_paths: list[Path], trust_root: Path | None, threshold: int | None, *, now: datetime
) -> TrustPolicy:
    """Build the policy from --key/--trust-root; exactly one of them must be given (see trust_inputs.load_policy)."""
    return load_policy(key_paths, trust_root, threshold, now=now)


def trust_rotate(
    current_path: Path,
    key_paths: list[Path],
    *,
    threshold: int,
    expires: str,
    products: tuple[str, ...],
    signing_key_paths: list[Path],
    out: Path,
) -> TrustRoot:
    """Write the successor of ``current_path`` signed by old and new signers; TrustError if too few signed."""
    current = load_trust_root(current_path)
    expires_at = _expires(expires)
    successor = TrustRoot.create(
        [load_public(p) for p in key_paths], threshold=threshold, expires=expires_at, products=products
    )
    data = rotate(current, successor, [load_private(p) for p in signing_key_paths])
    write_atomic(out, data)
    return TrustRoot.from_bytes(data, what=str(out))


def trust_update(current_path: Path, successor_path: Path, *, out: Path | None) -> TrustRoot:
    """Move a host from its current root to the signed successor (replacing the current file atomically)."""
    current = load_trust_root(current_path)
    data, document = load_successor(successor_path)
    successor = check_successor(current, document, what=str(successor_path))
    # The bytes as read and checked, not a second read of the path.
    write_atomic(out or current_path, data)
    return successor
