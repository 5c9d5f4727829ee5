"""Registry addresses and image references: what --registry accepts and where an image is pushed."""

from __future__ import annotations

import re

from kitbuilder.errors import UsageError

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?"
)


def parse_registry(value: str) -> str:
    """``HOST[:PORT]`` as given to --registry; UsageError for a URL, a path or a bad port."""
    match = _HOST.fullmatch(value)
    if match is None:
        raise UsageError(f"--registry {value!r}: expected HOST or HOST:PORT (no scheme, no path), e.g. 127.0.0.1:5000")
    port = match.group(1)
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"--registry {value!r}: port {port} is out of range")
    return value


def split_reference(ref: str) -> tuple[str | None, str, str]:
    """(registry host or None, repository, tag) of a reference such as registry.local/team/app:1.0.

    The first path component is a host when it contains '.' or ':' or is 'localhost'
    (the rule docker uses); the tag defaults to latest.
    """
    name, tag = ref, "latest"
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return None, name, tag


def push_target(ref: str, registry: str) -> tuple[str, str]:
    """Repository and tag an image with ``ref`` is pushed as: its registry host replaced by ``registry``."""
    _, repository, tag = split_reference(ref)
    return repository, tag
