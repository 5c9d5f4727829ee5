"""Credentials out of what kit records and prints: database URLs, argv and driver messages.

Applied where argv and database URLs are captured (reports, ``kit_runs.argv``,
messages) and to every driver message, which may quote the password it rejected.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence


def redact(text: str) -> str:
    """``text`` with the password of any URL (``scheme://user:secret@``) and any ``password=…`` replaced by ***.

    Applied where argv and database URLs are captured, so reports, ``kit_runs.argv``
    and messages never carry a credential.
    """
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|[^\s&]+)", r"\1***", text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The password(s) a database URL carries (userinfo and ``password=`` parameters), raw and percent-decoded."""
    found: set[str] = set()
    userinfo = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://([^@]*)@", url)
    if userinfo and ":" in userinfo.group(1):
        found.add(userinfo.group(1).split(":", 1)[1])
    found.update(re.findall(r"(?i)[?&]password=([^&]*)", url))
    found |= {urllib.parse.unquote(value) for value in found}
    return tuple(sorted(value for value in found if value))


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret, and every double-quoted token that is part of one, replaced by ***.

    libpq quotes the values it rejects (`invalid percent-encoded token: "pa%ss"`), password included.
    """
    if not secrets:
        return text

    def quoted(match: re.Match[str]) -> str:
        inner = match.group(1)
        return '"***"' if inner and any(inner in secret for secret in secrets) else match.group(0)

    text = re.sub(r'"([^"]*)"', quoted, text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # a shorter one would blank out ordinary words; quoted echoes are caught above
            text = text.replace(secret, "***")
    return text


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` as recorded: credentials in URLs and ``password=…`` redacted, ``--*password*=VALUE`` hidden.

    kit itself takes no secret as a separate option value (registry passwords come from stdin or
    the environment), so a flag such as ``--password-stdin`` is kept and the next argument is not hidden.
    """
    out: list[str] = []
    for arg in argv:
        name, eq, _ = arg.partition("=")
        secret = any(word in name for word in ("password", "secret", "token"))
        out.append(f"{name}=***" if name.startswith("--") and eq and secret else redact(arg))
    return out
