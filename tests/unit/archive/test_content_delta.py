"""archive.content_delta: a patch decodes against its base to exactly the target, and nothing else is accepted."""

from __future__ import annotations

import hashlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kitbuilder.archive import content_delta, layout
from kitbuilder.errors import IntegrityError

_bases = st.binary(min_size=content_delta.MIN_BASE, max_size=4096)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@settings(max_examples=60, deadline=None)
@given(base=_bases, start=st.integers(0, 4096), edit=st.binary(max_size=64), tail=st.binary(max_size=64))
def test_round_trip(base: bytes, start: int, edit: bytes, tail: bytes) -> None:
    start = min(start, len(base))
    target = base[:start] + edit + base[start + len(edit) :] + tail
    if not target:
        target = b"\0"
    patch = content_delta.encode(target, base)
    assert content_delta.decode(patch, base, size=len(target), sha256=_digest(target), what="p") == target


@settings(max_examples=30, deadline=None)
@given(base=_bases, other=_bases)
def test_another_base_never_yields_the_target(base: bytes, other: bytes) -> None:
    """Decoded against any other base, a patch either fails or gives other bytes: both refused [4]."""
    target = base[::-1] + base
    patch = content_delta.encode(target, base)
    if other == base:
        return
    try:
        content_delta.decode(patch, other, size=len(target), sha256=_digest(target), what="p")
    except IntegrityError:
        return
    pytest.fail("a patch decoded against another base passed as the target")


def test_a_small_change_costs_bytes_in_proportion_to_it() -> None:
    base = b"".join(b'{"id":%d,"rev":0,"name":"row %d"}\n' % (n, n) for n in range(20000))[: layout.LARGE - 1]
    target = base.replace(b'"id":5000,"rev":0', b'"id":5000,"rev":1')
    assert len(content_delta.encode(target, base)) < 200


def test_trailing_bytes_are_refused() -> None:
    base, target = b"a" * 100, b"a" * 99 + b"b"
    patch = content_delta.encode(target, base)
    with pytest.raises(IntegrityError, match="does not decode"):
        content_delta.decode(patch + b"\0", base, size=len(target), sha256=_digest(target), what="p")


def test_a_size_other_than_the_signed_one_is_refused_before_decoding() -> None:
    base = b"a" * 100
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="declares 67108864 bytes, the target signs 10"):
        content_delta.decode(bomb, base, size=10, sha256=_digest(b"x"), what="p")
    unsized = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="declares no size"):
        content_delta.decode(unsized, base, size=10, sha256=_digest(b"x"), what="p")


def test_a_wide_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=26, write_content_size=1)
    data = bytes(2 * content_delta.MAX_WINDOW)
    frame = zstandard.ZstdCompressor(compression_params=params).compress(data)
    # The window the header asks for is over the cap (a patch of two small files never needs it): refused unread.
    with pytest.raises(IntegrityError, match="window"):
        content_delta.decode(frame, b"a" * 100, size=len(data), sha256=_digest(data), what="p")


def test_usable_sizes() -> None:
    assert content_delta.usable(content_delta.MIN_BASE, 1)
    assert not content_delta.usable(content_delta.MIN_BASE - 1, 1)
    assert not content_delta.usable(layout.LARGE, 1)
    assert not content_delta.usable(100, layout.LARGE)
    assert not content_delta.usable(100, 0)
