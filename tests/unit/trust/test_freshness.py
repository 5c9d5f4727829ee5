"""Anti-rollback decisions over an in-memory store: rollback refused, downgrade only when allowed (and
reported), the clock judged at the latest time seen, and records that never move backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kitbuilder.errors import PolicyError, UsageError
from kitbuilder.trust.freshness import Freshness, MemoryFreshnessStore, Seen

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def test_a_kit_never_seen_is_fresh_and_recorded() -> None:
    store = MemoryFreshnessStore()
    freshness = Freshness(store)
    assert freshness.check("app", "stable", 1) is None
    assert freshness.effective_now("app", "stable", T0) == T0
    freshness.record("app", "stable", 4, T0)
    assert store.load("app", "stable") == Seen(4, T0)


def test_an_older_sequence_is_a_rollback_unless_allowed_and_then_it_is_reported() -> None:
    store = MemoryFreshnessStore()
    Freshness(store).record("app", "stable", 7, T0)
    assert Freshness(store).check("app", "stable", 7) is None
    assert Freshness(store).check("app", "stable", 8) is None
    with pytest.raises(PolicyError, match=r"sequence 6 is older than sequence 7 already accepted.*--allow-downgrade"):
        Freshness(store).check("app", "stable", 6)
    note = Freshness(store, allow_downgrade=True).check("app", "stable", 6)
    assert note == "DOWNGRADE allowed: sequence 6 < 7 already accepted"


def test_names_and_channels_are_remembered_apart() -> None:
    store = MemoryFreshnessStore()
    Freshness(store).record("app", "stable", 7, T0)
    assert Freshness(store).check("app", "beta", 1) is None
    assert Freshness(store).check("other", "stable", 1) is None


def test_records_never_move_backwards_and_a_clock_set_back_does_not_help() -> None:
    store = MemoryFreshnessStore()
    freshness = Freshness(store, allow_downgrade=True)
    freshness.record("app", "stable", 9, T0 + timedelta(days=10))
    freshness.record("app", "stable", 3, T0)  # an allowed downgrade, judged on a clock set back
    assert store.load("app", "stable") == Seen(9, T0 + timedelta(days=10))
    assert freshness.effective_now("app", "stable", T0) == T0 + timedelta(days=10)
    assert freshness.effective_now("app", "stable", T0 + timedelta(days=11)) == T0 + timedelta(days=11)


def test_a_record_round_trips_through_its_bytes() -> None:
    data = Seen(12, T0).to_bytes("app", "stable")
    assert Seen.from_bytes(data, what="state") == Seen(12, T0)
    assert b'"highestSequence": 12' in data and b'"lastSeen": "2026-06-01T00:00:00Z"' in data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"highestSequence": 3}',
        b'{"lastSeen": "2026-06-01T00:00:00Z"}',
        b'{"highestSequence": 3, "lastSeen": "June"}',
        b'{"highestSequence": true, "lastSeen": "2026-06-01T00:00:00Z"}',
        b'{"highestSequence": "3", "lastSeen": "2026-06-01T00:00:00Z"}',
        b'{"highestSequence": 3, "lastSeen": "2026-06-01T00:00:00+00:00"}',
    ],
)
def test_a_damaged_record_is_refused_for_the_admin_to_repair(data: bytes) -> None:
    store = MemoryFreshnessStore({("app", "stable"): data})
    with pytest.raises(UsageError, match="app@stable: anti-rollback state is damaged .*restore it or remove it"):
        Freshness(store).check("app", "stable", 1)


def test_the_store_location_is_named_in_messages() -> None:
    assert Freshness(MemoryFreshnessStore()).directory == "memory"
