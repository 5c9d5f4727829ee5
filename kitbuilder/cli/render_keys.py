"""keygen and trust reports. ``KeygenResult`` (ops/keys.py) and ``TrustRoot`` (trust/root.py) have no
``to_json`` of their own yet; their report documents are built here, until those modules carry them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kitbuilder.core import timefmt
from kitbuilder.ops.keys import KeygenResult
from kitbuilder.trust.root import TrustRoot


def keygen_json(result: KeygenResult, key_type: str) -> dict[str, Any]:
    return {
        "ok": True,
        "keyid": result.keyid,
        "type": key_type,
        "private": str(result.private_path),
        "public": str(result.public_path),
        "encrypted": result.encrypted,
    }


def keygen_text(result: KeygenResult) -> None:
    state = "encrypted" if result.encrypted else "UNENCRYPTED"
    click.echo(f"wrote {result.private_path} ({state}) and {result.public_path}")
    click.echo(f"key id {result.keyid}")


def trust_init_json(root: TrustRoot, out: Path) -> dict[str, Any]:
    return {
        "ok": True,
        "out": str(out),
        "threshold": root.threshold,
        "keyids": [k.keyid for k in root.keys],
        "expires": timefmt.format_utc(root.expires),
    }


def trust_init_text(root: TrustRoot, out: Path) -> None:
    click.echo(
        f"wrote {out}: {len(root.keys)} key(s), threshold {root.threshold}, expires {timefmt.format_utc(root.expires)}"
    )


def trust_rotate_json(root: TrustRoot, out: Path) -> dict[str, Any]:
    return {"ok": True, "out": str(out), "version": root.version, "keyids": [k.keyid for k in root.keys]}


def trust_rotate_text(root: TrustRoot, out: Path) -> None:
    click.echo(f"wrote {out}: version {root.version}, {len(root.keys)} key(s), threshold {root.threshold}")


def trust_update_json(root: TrustRoot) -> dict[str, Any]:
    return {"ok": True, "version": root.version, "keyids": [k.keyid for k in root.keys]}


def trust_update_text(root: TrustRoot) -> None:
    click.echo(f"trust root is now version {root.version} ({len(root.keys)} key(s), threshold {root.threshold})")
