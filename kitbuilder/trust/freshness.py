"""Anti-rollback memory: the highest sequence and latest time this host has accepted, per kit name and channel.

An attacker who can hand the host an old, genuinely signed kit (or set its
clock back) must not get it accepted: an older sequence is refused unless the
admin says --allow-downgrade, and expiry is judged against max(now, the latest
time seen), so a clock set back does not revive a stale kit.

Pure: the records live in a ``FreshnessStore`` the caller passes in (ops keeps
them in files, tests in memory); a record's bytes are parsed and written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kitbuilder.core import jsonio, timefmt
from kitbuilder.errors import FormatError, PolicyError, UsageError


@dataclass(frozen=True)
class Seen:
    """What this host has accepted of one kit name and channel."""

    highest_sequence: int
    last_seen: datetime

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str) -> Seen:
        """A stored record; UsageError (the admin's to repair, not the kit's fault) when it is damaged."""
        try:
            document = jsonio.load_object(data, what=what)
            sequence = document["highestSequence"]
            # A bool is an int in Python, but `true` is no sequence.
            if isinstance(sequence, bool) or not isinstance(sequence, int):
                raise TypeError(f"highestSequence must be an integer, got {sequence!r}")
            return cls(sequence, timefmt.parse_canonical(document["lastSeen"]))
        except (FormatError, KeyError, ValueError, TypeError) as exc:
            raise UsageError(
                f"{what}: anti-rollback state is damaged ({exc}); restore it or remove it knowingly"
            ) from exc

    def to_bytes(self, name: str, channel: str) -> bytes:
        return jsonio.dump_pretty(
            {
                "name": name,
                "channel": channel,
                "highestSequence": self.highest_sequence,
                "lastSeen": timefmt.format_utc(self.last_seen),
            }
        )


class FreshnessStore(Protocol):
    """Where the records live. ``load`` returns None for a kit never accepted here."""

    @property
    def location(self) -> str:
        """Where the records are, for messages."""
        ...

    def load(self, name: str, channel: str) -> Seen | None: ...

    def save(self, name: str, channel: str, seen: Seen) -> None: ...


class MemoryFreshnessStore:
    """Records held in memory, stored as the same bytes a file would hold (so they round-trip as files do)."""

    def __init__(self, records: dict[tuple[str, str], bytes] | None = None) -> None:
        self.records: dict[tuple[str, str], bytes] = dict(records or {})

    @property
    def location(self) -> str:
        return "memory"

    def load(self, name: str, channel: str) -> Seen | None:
        data = self.records.get((name, channel))
        return None if data is None else Seen.from_bytes(data, what=f"{name}@{channel}")

    def save(self, name: str, channel: str, seen: Seen) -> None:
        self.records[(name, channel)] = seen.to_bytes(name, channel)


class Freshness:
    """The anti-rollback decisions over one store."""

    def __init__(self, store: FreshnessStore, *, allow_downgrade: bool = False) -> None:
        self.store = store
        self.allow_downgrade = allow_downgrade

    @property
    def directory(self) -> str:
        """Where the records are, for messages (the name ops/verify has always read)."""
        return self.store.location

    def load(self, name: str, channel: str) -> Seen | None:
        return self.store.load(name, channel)

    def effective_now(self, name: str, channel: str, now: datetime) -> datetime:
        seen = self.store.load(name, channel)
        return max(now, seen.last_seen) if seen else now

    def check(self, name: str, channel: str, sequence: int) -> str | None:
        """PolicyError for a downgrade unless allowed; returns a note when a downgrade was allowed."""
        seen = self.store.load(name, channel)
        if seen is None or sequence >= seen.highest_sequence:
            return None
        if not self.allow_downgrade:
            raise PolicyError(
                f"kit {name} ({channel}) sequence {sequence} is older than sequence {seen.highest_sequence} already "
                f"accepted on this host; refusing a rollback (--allow-downgrade to override, it is reported)"
            )
        return f"DOWNGRADE allowed: sequence {sequence} < {seen.highest_sequence} already accepted"

    def record(self, name: str, channel: str, sequence: int, now: datetime) -> None:
        """Remember ``sequence`` and ``now``; neither ever moves backwards."""
        seen = self.store.load(name, channel)
        highest = max(sequence, seen.highest_sequence) if seen else sequence
        latest = max(now, seen.last_seen) if seen else now
        self.store.save(name, channel, Seen(highest, latest))
