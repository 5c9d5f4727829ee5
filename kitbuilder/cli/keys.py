"""``kit keygen`` and ``kit trust init|rotate|update``: signing keys and the trust roots offline hosts hold."""

from __future__ import annotations

from pathlib import Path

import click

from kitbuilder.cli import render_keys
from kitbuilder.cli.app import main
from kitbuilder.cli.errors import exit_on_error
from kitbuilder.cli.options import json_option
from kitbuilder.cli.render import emit_json
from kitbuilder.ops import keys as keys_op
from kitbuilder.trust.keys import KEY_TYPES


@main.command()
@click.option("--type", "key_type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True)
@click.option(
    "--out", "prefix", required=True, type=click.Path(path_type=Path), help="Writes PREFIX.key and PREFIX.pub."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@json_option
def keygen(key_type: str, prefix: Path, force: bool, as_json: bool) -> None:
    """Generate a signing key pair (private key encrypted with $KIT_PASSPHRASE when set)."""
    with exit_on_error(as_json):
        result = keys_op.keygen(key_type, prefix, force=force)
    if as_json:
        emit_json(render_keys.keygen_json(result, key_type))
    else:
        render_keys.keygen_text(result)


@main.group()
def trust() -> None:
    """Trust roots: which keys an offline host accepts."""


@trust.command("init")
@click.option("--key", "keys", multiple=True, required=True, type=click.Path(path_type=Path))
@click.option("--threshold", type=int, default=1, show_default=True)
@click.option("--expires", required=True, help="YYYY-MM-DD or RFC 3339 UTC time.")
@click.option("--product", "products", multiple=True, help="Restrict to these products (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@json_option
def trust_init(
    keys: tuple[Path, ...], threshold: int, expires: str, products: tuple[str, ...], out: Path, as_json: bool
) -> None:
    """Write a trust root listing KEYs, of which THRESHOLD must sign each kit."""
    with exit_on_error(as_json):
        root = keys_op.trust_init(list(keys), threshold=threshold, expires=expires, products=products, out=out)
    if as_json:
        emit_json(render_keys.trust_init_json(root, out))
    else:
        render_keys.trust_init_text(root, out)


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
@json_option
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
    with exit_on_error(as_json):
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
        emit_json(render_keys.trust_rotate_json(root, out))
    else:
        render_keys.trust_rotate_text(root, out)


@trust.command("update")
@click.option(
    "--trust-root", "current", required=True, type=click.Path(path_type=Path), help="The host's current root."
)
@click.argument("successor", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write here instead of replacing --trust-root.")
@json_option
def trust_update(current: Path, successor: Path, out: Path | None, as_json: bool) -> None:
    """Accept SUCCESSOR as the next root: it must be signed by a threshold of the current keys and its own."""
    with exit_on_error(as_json):
        root = keys_op.trust_update(current, successor, out=out)
    if as_json:
        emit_json(render_keys.trust_update_json(root))
    else:
        render_keys.trust_update_text(root)
