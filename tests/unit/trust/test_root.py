"""Trust roots from bytes: every field a root carries is checked, a signature counts only for its own key,
a successor needs a threshold of the old keys and of its own, and an expired root is refused at ``now``.

Each case feeds the parser a root with one thing changed (as tuf's test_trusted_metadata_set does).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kitbuilder.core import jsonio
from kitbuilder.errors import FormatError, PolicyError, TrustError, UsageError
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.root import RootDocument, RootSignature, TrustRoot, check_successor, rotate
from tests.factories.keys import ecdsa_key, ed25519_key

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
A, B, C = ed25519_key("root-a"), ecdsa_key("root-b"), ed25519_key("root-c")


def root_of(*keys: PrivateKey, threshold: int = 1, products: tuple[str, ...] = ()) -> TrustRoot:
    return TrustRoot.create([k.public for k in keys], threshold=threshold, expires=EXPIRES, products=products)


def edited(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(data)
    change(document)
    return json.dumps(document).encode()


def resigned(document: dict[str, Any], *keys: PrivateKey) -> bytes:
    """``document`` with fresh signatures by ``keys`` over its (possibly edited) signed part."""
    message = jsonio.dump_compact(document["signed"])
    document["signatures"] = [{"keyid": k.keyid, "sig": base64.b64encode(k.sign(message)).decode()} for k in keys]
    return json.dumps(document).encode()


def test_a_root_round_trips_through_its_bytes() -> None:
    root = root_of(A, B, threshold=2, products=("stellaops",))
    parsed = TrustRoot.from_bytes(root.to_bytes(), what="trust.json")
    assert (parsed.version, parsed.threshold, parsed.expires, parsed.products) == (1, 2, EXPIRES, ("stellaops",))
    assert sorted(k.keyid for k in parsed.keys) == sorted((A.keyid, B.keyid))
    assert parsed.to_bytes() == root.to_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["signed"]["keys"][0].update(keyid="0" * 64), "does not match its key"),
        (lambda d: d["signed"]["keys"][0].update(type="ecdsa-p256"), "but the key is ed25519"),
        (lambda d: d["signed"]["keys"][0].update(publicKeyPem="not a key"), "keys[0]"),
        (lambda d: d["signed"].update(threshold=2), "threshold 2 is more than the 1 keys"),
        (lambda d: d["signed"]["keys"].append(dict(d["signed"]["keys"][0])), "a key is listed twice"),
        (lambda d: d["signed"].update(expires="2030-02-30T00:00:00Z"), "expires"),
        (lambda d: d["signed"].update(kind="Root"), "kind"),
        (lambda d: d["signed"].update(extra=1), "extra"),
        (lambda d: d.pop("signatures"), "signatures"),
        (lambda d: d["signed"].update(version=0), "version"),
    ],
)
def test_a_root_with_one_field_changed_is_refused_naming_it(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = edited(root_of(A).to_bytes(), change)
    with pytest.raises(UsageError) as caught:
        TrustRoot.from_bytes(data, what="trust.json")
    assert str(caught.value).startswith("trust.json") and message in str(caught.value)


def test_bytes_that_are_not_a_json_object_are_a_usage_error_or_the_callers_choice() -> None:
    with pytest.raises(UsageError, match="trust.json"):
        TrustRoot.from_bytes(b"{not json", what="trust.json")
    with pytest.raises(FormatError, match="next.json"):
        RootDocument.from_bytes(b"[]", what="next.json", not_json=FormatError)


def test_an_expired_root_is_refused_at_now_and_accepted_just_before() -> None:
    root = root_of(A)
    root.check_current(EXPIRES - timedelta(seconds=1), what="trust.json")
    for now in (EXPIRES, EXPIRES + timedelta(days=1)):
        with pytest.raises(PolicyError, match="trust.json: trust root expired at 2030-01-01T00:00:00Z"):
            root.check_current(now, what="trust.json")


def test_a_later_version_needs_a_threshold_of_its_own_signatures() -> None:
    unsigned = edited(root_of(A, B, threshold=2).to_bytes(), lambda d: d["signed"].update(version=2))
    with pytest.raises(TrustError, match="carries 0 valid self-signature"):
        TrustRoot.from_bytes(unsigned, what="v2")
    one = resigned(json.loads(unsigned), A)
    with pytest.raises(TrustError, match="carries 1 valid self-signature.*2 required"):
        TrustRoot.from_bytes(one, what="v2")
    assert TrustRoot.from_bytes(resigned(json.loads(unsigned), A, B), what="v2").version == 2


def test_a_signature_counts_only_for_the_key_that_made_it_and_each_key_once() -> None:
    document = json.loads(edited(root_of(A, B, threshold=2).to_bytes(), lambda d: d["signed"].update(version=2)))
    message = jsonio.dump_compact(document["signed"])
    by_c = base64.b64encode(C.sign(message)).decode()
    by_a = base64.b64encode(A.sign(message)).decode()
    # C's signature under B's key id, and A's signature twice: one valid signer, not two.
    document["signatures"] = [
        {"keyid": B.keyid, "sig": by_c},
        {"keyid": A.keyid, "sig": by_a},
        {"keyid": A.keyid, "sig": by_a},
        {"keyid": B.keyid, "sig": "!!not base64"},
    ]
    parsed = RootDocument.from_bytes(json.dumps(document).encode(), what="v2")
    assert parsed.signers([A.public, B.public]) == {A.keyid}
    with pytest.raises(TrustError, match="1 valid self-signature"):
        TrustRoot.from_document(parsed, what="v2")


def test_rotation_needs_the_old_keys_and_the_new_ones() -> None:
    current = root_of(A)
    successor = root_of(B)
    data = rotate(current, successor, [A, B])
    accepted = check_successor(current, RootDocument.from_bytes(data, what="next"), what="next")
    assert accepted.version == 2 and [k.keyid for k in accepted.keys] == [B.keyid]
    with pytest.raises(TrustError, match="signed by 0 of the current root's keys, 1 required"):
        rotate(current, successor, [B])
    with pytest.raises(TrustError, match="self-signature"):
        rotate(current, successor, [A])


def test_a_successor_edited_after_signing_or_skipping_a_version_is_refused() -> None:
    current = root_of(A)
    data = rotate(current, root_of(A, B), [A, B])
    # One field changed after signing: every signature is over other bytes now.
    widened = edited(data, lambda d: d["signed"].update(expires="2099-01-01T00:00:00Z"))
    with pytest.raises(TrustError, match="self-signature"):
        check_successor(current, RootDocument.from_bytes(widened, what="next"), what="next")
    skipped = resigned(json.loads(edited(data, lambda d: d["signed"].update(version=3))), A, B)
    with pytest.raises(TrustError, match="version 3 does not follow the current version 1"):
        check_successor(current, RootDocument.from_bytes(skipped, what="next"), what="next")
    replayed = RootDocument.from_bytes(current.to_bytes(), what="old")
    with pytest.raises(TrustError, match="version 1 does not follow"):
        check_successor(current, replayed, what="old")


def test_signature_entries_keep_their_bytes_and_fields() -> None:
    entry = RootSignature.from_json({"keyid": "k", "sig": base64.b64encode(b"\x01\x02").decode()})
    assert entry.decoded() == b"\x01\x02" and entry.to_json() == {"keyid": "k", "sig": "AQI="}
    assert RootSignature("k", "*").decoded() is None
