"""RFC 3339 UTC timestamps, the only time form kit documents use."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_utc(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` (midnight UTC) or an RFC 3339 timestamp; ValueError otherwise."""
    if _DATE_ONLY.fullmatch(text):
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z for UTC")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
