"""Anti-rollback memory: the highest sequence and latest time this host has accepted, per kit name and channel.

An attacker who can hand the host an old, genuinely signed kit (or set its
clock back) must not get it accepted: an older sequence is refused unless the
admin says --allow-downgrade, and expiry is judged against max(now, the latest
time seen), so a clock set back does not revive a stale kit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kitbuilder import inputfile
from kitbuilder.atomic import os_error, write_atomic
from kitbuilder.core import jsonio, timefmt
from kitbuilder.errors import FormatError, PolicyError, UsageError

STATE_ENV = "KIT_STATE_DIR"


def default_state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kitbuilder"


@dataclass(frozen=True)
class Seen:
    highest_sequence: int
    last_seen: datetime


class Freshness:
    def __init__(self, directory: Path, *, allow_downgrade: bool = False) -> None:
        self.directory = directory
        self.allow_downgrade = allow_downgrade

    def _file(self, name: str, channel: str) -> Path:
        safe = re.sub(r"[^a-z0-9._@-]", "_", f"{name}@{channel}")
        return self.directory / f"{safe}.json"

    def load(self, name: str, channel: str) -> Seen | None:
        path = self._file(name, channel)
        try:
            # Never through a link: the write below replaces the link, so a read through it would judge by a file
            # the next record no longer touches (and a link to /dev/zero or a FIFO would hang verify).
            data = inputfile.read_small(
                path, limit=inputfile.STATE_BYTES, what="anti-rollback state", follow_links=False
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read anti-rollback state ({exc.strerror})") from exc
        try:
            document = jsonio.load_object(data, what=str(path))
            return Seen(int(document["highestSequence"]), timefmt.parse_canonical(document["lastSeen"]))
        except (FormatError, KeyError, ValueError, TypeError) as exc:
            raise UsageError(
                f"{path}: anti-rollback state is damaged ({exc}); restore it or remove it knowingly"
            ) from exc

    def effective_now(self, name: str, channel: str, now: datetime) -> datetime:
        seen = self.load(name, channel)
        return max(now, seen.last_seen) if seen else now

    def check(self, name: str, channel: str, sequence: int) -> str | None:
        """PolicyError for a downgrade unless allowed; returns a note when a downgrade was allowed."""
        seen = self.load(name, channel)
        if seen is None or sequence >= seen.highest_sequence:
            return None
        if not self.allow_downgrade:
            raise PolicyError(
                f"kit {name} ({channel}) sequence {sequence} is older than sequence {seen.highest_sequence} already "
                f"accepted on this host; refusing a rollback (--allow-downgrade to override, it is reported)"
            )
        return f"DOWNGRADE allowed: sequence {sequence} < {seen.highest_sequence} already accepted"

    def record(self, name: str, channel: str, sequence: int, now: datetime) -> None:

        seen = self.load(name, channel)
        highest = max(sequence, seen.highest_sequence) if seen else sequence
        latest = max(now, seen.last_seen) if seen else now
        document = {
            "name": name,
            "channel": channel,
            "highestSequence": highest,
            "lastSeen": timefmt.format_utc(latest),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.directory, action="create the anti-rollback state directory") from exc
        write_atomic(self._file(name, channel), jsonio.dump_pretty(document))
