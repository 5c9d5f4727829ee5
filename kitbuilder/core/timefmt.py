"""Times: the one strict parser behind every date kit reads, and the one form it writes.

Two grammars, both matched whole (``re.fullmatch``, ASCII digits only) and then
built with ``datetime`` so that an impossible date is refused here, naming the
value, instead of passing a regular expression and failing later:

- ``CANONICAL``: ``YYYY-MM-DDTHH:MM:SSZ``, the only form kit writes and the
  only one it reads from documents it wrote itself (``kit.expires``,
  ``kit.created``, the anti-rollback state, provenance times).
- ``INPUT``: what a person may type (``--now``, ``--expires``, the spec's
  ``expires``, a trust root's ``expires``): ``YYYY-MM-DD`` (midnight UTC), or
  ``YYYY-MM-DDTHH:MM:SS`` followed by ``Z`` or a numeric offset ``+HH:MM`` /
  ``-HH:MM`` (RFC 3339 §5.6), converted to UTC.

Refused by both: a leap second (``:60``; Python's datetime cannot hold it and
kit never needs it), ``24:00``, fractional seconds (kit times are whole
seconds, and dropping a fraction on rewrite would silently move an expiry),
lowercase ``t``/``z``, a space instead of ``T``, surrounding whitespace or a
trailing newline, offsets beyond ±23:59, and any time that falls outside the
years 0001-9999 once converted to UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

CANONICAL_FORM = "YYYY-MM-DDTHH:MM:SSZ"
INPUT_FORMS = "YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DDTHH:MM:SS+HH:MM"

_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_CANONICAL = re.compile(rf"{_DATE}T{_TIME}Z")
_DATE_ONLY = re.compile(_DATE)
_WITH_OFFSET = re.compile(rf"{_DATE}T{_TIME}(?:Z|([+-])([0-9]{{2}}):([0-9]{{2}}))")


class TimeFormatError(ValueError):
    """A time that is not in the accepted grammar or not a real instant; callers name the field."""


def parse_canonical(text: str) -> datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` exactly, as kit writes it; TimeFormatError otherwise."""
    match = _CANONICAL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TimeFormatError(f"{_show(text)} is not a time of the form {CANONICAL_FORM}")
    return _build(text, *match.groups())


def parse_input(text: str) -> datetime:
    """A time a person typed (see the module docstring), as an aware UTC datetime; TimeFormatError otherwise."""
    if not isinstance(text, str):
        raise TimeFormatError(f"{_show(text)} is not a time: expected {INPUT_FORMS}")
    match = _DATE_ONLY.fullmatch(text)
    if match is not None:
        year, month, day = match.groups()
        return _build(text, year, month, day, "00", "00", "00")
    match = _WITH_OFFSET.fullmatch(text)
    if match is None:
        raise TimeFormatError(f"{_show(text)} is not a time: expected {INPUT_FORMS} (UTC unless an offset is given)")
    *fields, sign, offset_hours, offset_minutes = match.groups()
    value = _build(text, *fields)
    if sign is None:
        return value
    hours, minutes = int(offset_hours), int(offset_minutes)
    if hours > 23 or minutes > 59:
        raise TimeFormatError(f"{_show(text)}: offset {sign}{offset_hours}:{offset_minutes} is not a valid offset")
    offset = timedelta(hours=hours, minutes=minutes)
    try:
        # Local time minus its offset is UTC (RFC 3339 §5.6); near year 1 or 9999 that leaves datetime's range.
        return value - offset if sign == "+" else value + offset
    except OverflowError as exc:
        raise TimeFormatError(f"{_show(text)} falls outside the years 0001-9999 in UTC") from exc


def parse_utc(text: str) -> datetime:
    """Kept for callers that read a typed time: the same as ``parse_input``."""
    return parse_input(text)


def _build(text: str, year: str, month: str, day: str, hour: str, minute: str, second: str) -> datetime:
    if second == "60":
        raise TimeFormatError(f"{_show(text)}: leap seconds (:60) are not accepted; use :59")
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError as exc:
        raise TimeFormatError(f"{_show(text)} is not a real date and time ({exc})") from exc


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_utc(value: datetime) -> str:
    """The canonical form; years below 1000 keep four digits (strftime's %Y does not pad them on glibc)."""
    utc = value.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


def from_epoch(seconds: int) -> datetime:
    """Seconds since 1970 as a UTC datetime; TimeFormatError if that is not within years 0001-9999."""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TimeFormatError(f"{seconds} seconds since 1970 is outside the years 0001-9999") from exc
