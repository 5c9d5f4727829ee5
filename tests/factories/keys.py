"""Fixed test keys: deterministic, so signatures and key ids are stable across runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kitbuilder.trust.keys import PrivateKey, PublicKey, private_pem


def ed25519_key(label: str) -> PrivateKey:
    seed = hashlib.sha256(f"kitbuilder-test-{label}".encode()).digest()
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return PrivateKey(public=PublicKey.from_object(private.public_key(), what=label), key=private)


def ecdsa_key(label: str) -> PrivateKey:
    scalar = int.from_bytes(hashlib.sha256(f"kitbuilder-test-{label}".encode()).digest(), "big") % (2**255)
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    return PrivateKey(public=PublicKey.from_object(private.public_key(), what=label), key=private)


def write_pair(key: PrivateKey, prefix: Path) -> tuple[Path, Path]:
    """Write PREFIX.key / PREFIX.pub the way `kit keygen` does (unencrypted)."""
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    private_path.write_bytes(private_pem(key, None))
    public_path.write_bytes(key.public.to_pem())
    return private_path, public_path
