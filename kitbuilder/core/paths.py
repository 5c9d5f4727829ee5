"""The one rule for paths inside a kit, shared by spec checking, building and verifying.

Kit paths are relative, '/'-separated, drawn from a portable ASCII set and fit a
plain ustar header (name <= 100 bytes, prefix <= 155), so a kit never needs PAX
or GNU extension headers: any such header in a kit is hostile by definition.
"""

from __future__ import annotations

import re
import unicodedata

PORTABLE_COMPONENT = re.compile(r"[A-Za-z0-9._+@=,-]+")
MAX_PATH_BYTES = 255
# Names kit gives its own state, beside kit files and inside installed kits: the directory-patch
# journal and staging area (.kit-patch/), locks (.NAME.kit-lock), temporary files (.NAME.<random>.part,
# .kit-export-tmp-*). No kit member may use one, so no signed input can collide with kit's own state
# (a delta shipping .kit-patch/journal.json would otherwise steer the next patch). Case-insensitive:
# some filesystems fold case.
RESERVED_COMPONENT = re.compile(r"\.kit-.*|\..*\.kit-lock|\..*\.part", re.IGNORECASE)
# The common case in one match: portable components that do not start with "." (so none is "", ".", ".." or
# reserved, every reserved name starting with a dot), at most 100 bytes (ustar's name field holds it whole).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]*(?:/[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]*)*")


def problem_with(path: str) -> str | None:
    """Why ``path`` is not a valid kit path, or None when it is."""
    if len(path) <= 100 and _PLAIN_PATH.fullmatch(path) is not None:
        return None
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return f"path component {part!r} is not allowed"
        if not PORTABLE_COMPONENT.fullmatch(part):
            return f"component {part!r} has characters outside [A-Za-z0-9._+@=,-]"
        if RESERVED_COMPONENT.fullmatch(part):
            return f"component {part!r} is reserved for kit's own state (.kit-*, .*.kit-lock, .*.part)"
    if len(path.encode()) > MAX_PATH_BYTES or ustar_split(path) is None:
        return "path too long for a ustar header (name 100 bytes, prefix 155 bytes)"
    return None


def ustar_split(path: str) -> tuple[str, str] | None:
    """(prefix, name) fields for ``path``, or None when it does not fit ustar."""
    if len(path) <= 100:
        return "", path
    for index in range(len(path) - 1, -1, -1):
        if path[index] == "/" and index <= 155 and len(path) - index - 1 <= 100:
            return path[:index], path[index + 1 :]
    return None


def collision_key(path: str) -> str:
    """Two paths with the same key land on the same file on some filesystem (case, Unicode, ./)."""
    if path.isascii():
        # NFC leaves ASCII as it is and casefold folds only A-Z there: lower() is the same key, much cheaper.
        parts = path.split("/")
        if "" not in parts and "." not in parts:
            return path.lower()
        return "/".join(p for p in parts if p not in ("", ".")).lower()
    normal = unicodedata.normalize("NFC", path)
    parts = [p for p in normal.split("/") if p not in ("", ".")]
    return "/".join(parts).casefold()


def claim(path: str, seen: dict[str, str]) -> str | None:
    """Record ``path`` among the paths ``seen`` so far; say why it cannot coexist with them, else None.

    Two paths clash when they name the same file on some filesystem (see ``collision_key``),
    or when one would have to be both a file and a directory (``docs/d`` and ``docs/d/e.md``),
    which `tar -x` cannot extract. Directory prefixes are kept in ``seen`` under a leading "/".

    O(1) per path once its directory is known: ``seen`` only ever holds a directory together with all of its
    own prefixes, and never a key both as a file and as a directory, so a path whose parent is already a
    directory there needs no walk of its prefixes (none can be a file, all are recorded).
    """
    key = collision_key(path)
    if key == path:
        key = path  # the caller's string, not a second copy of it (most paths are their own key)
    if key in seen:
        return f"duplicate of {seen[key]} (same name up to case, Unicode form or ./)"
    if "/" + key in seen:
        return f"is a file, but {seen['/' + key]} needs it to be a directory"
    parent, slash, _ = key.rpartition("/")
    if not slash or "/" + parent in seen:
        seen[key] = path
        return None
    parts = key.split("/")
    for end in range(1, len(parts)):
        prefix = "/".join(parts[:end])
        if prefix in seen:
            return f"needs {seen[prefix]} to be a directory, but it is a file"
    seen[key] = path
    for end in range(1, len(parts)):
        seen.setdefault("/" + "/".join(parts[:end]), path)
    return None
