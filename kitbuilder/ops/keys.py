"""kit keygen and kit trust init, and turning key options into a trust policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kitbuilder import inputfile
from kitbuilder.atomic import write_atomic, write_atomic_group
from kitbuilder.core import jsonio, timefmt
from kitbuilder.errors import UsageError
from kitbuilder.trust import keys
from kitbuilder.trust.keys import PrivateKey, load_private, load_public
from kitbuilder.trust.root import TrustRoot, check_successor, rotate
from kitbuilder.trust.signatures import TrustPolicy

__all__ = ["keygen", "trust_init", "trust_policy", "trust_rotate", "trust_update", "load_private"]


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
    passphrase = keys.passphrase_from_env()
    # Both files or neither: a rerun after a full disk finds no lone half of a pair (which it would refuse).
    write_atomic_group(
        [(private_path, keys.private_pem(key, passphrase), 0o600), (public_path, key.public.to_pem(), 0o644)]
    )
    return KeygenResult(
        keyid=key.keyid, private_path=private_path, public_path=public_path, encrypted=passphrase is not None
    )


def trust_init(
    key_paths: list[Path], *, threshold: int, expires: str, products: tuple[str, ...], out: Path
) -> TrustRoot:
    try:
        expires_at = timefmt.parse_utc(expires)
    except ValueError as exc:
        raise UsageError(f"--expires {expires}: {exc}") from exc
    root = TrustRoot.create(
        [load_public(p) for p in key_paths], threshold=threshold, expires=expires_at, products=products
    )
    write_atomic(out, root.to_bytes())
    return root


def trust_policy(
    key_paths: list[Path], trust_root: Path | None, threshold: int | None, *, now: datetime
) -> TrustPolicy:
    """Build the policy from --key/--trust-root; exactly one of them must be given."""
    if trust_root is not None and key_paths:
        raise UsageError("give either --key or --trust-root, not both")
    if trust_root is not None:
        if threshold is not None:
            raise UsageError("--threshold applies to --key; a trust root carries its own threshold")
        root = TrustRoot.load(trust_root)
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
    current = TrustRoot.load(current_path)
    try:
        expires_at = timefmt.parse_utc(expires)
    except ValueError as exc:
        raise UsageError(f"--expires {expires}: {exc}") from exc
    successor = TrustRoot.create(
        [load_public(p) for p in key_paths], threshold=threshold, expires=expires_at, products=products
    )
    data = rotate(current, successor, [load_private(p) for p in signing_key_paths])
    write_atomic(out, data)
    return TrustRoot.from_bytes(data, what=str(out))


def trust_update(current_path: Path, successor_path: Path, *, out: Path | None) -> TrustRoot:
    """Move a host from its current root to the signed successor (replacing the current file atomically)."""
    current = TrustRoot.load(current_path)
    try:
        data = inputfile.read_small(successor_path, limit=inputfile.TRUST_ROOT_BYTES, what="trust root")
    except OSError as exc:
        raise UsageError(f"{successor_path}: cannot read ({exc.strerror})") from exc
    document = jsonio.load_object(data, what=str(successor_path))
    successor = check_successor(current, document, what=str(successor_path))
    write_atomic(out or current_path, data)
    return successor
