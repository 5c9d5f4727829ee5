"""Reading trust inputs from files: bounded, regular files only, each failure one line naming the file.
The file-backed anti-rollback store keeps the same records the in-memory one does."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kitbuilder.errors import PolicyError, UsageError
from kitbuilder.ops import trust_inputs
from kitbuilder.ops.trust_inputs import FileFreshnessStore, file_freshness, load_policy, load_private, load_public
from kitbuilder.trust.freshness import Seen
from kitbuilder.trust.keys import private_pem
from kitbuilder.trust.root import TrustRoot
from tests.factories.keys import ed25519_key, write_pair

T0 = datetime(2026, 6, 1, tzinfo=UTC)
KEY = ed25519_key("inputs")


def test_keys_are_read_from_their_files(tmp_path: Path) -> None:
    private, public = write_pair(KEY, tmp_path / "release")
    assert load_public(public).keyid == load_private(private).keyid == KEY.keyid


def test_an_encrypted_key_is_decrypted_with_the_environment_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(private_pem(KEY, b"horse"))
    monkeypatch.delenv("KIT_PASSPHRASE", raising=False)
    with pytest.raises(UsageError, match=f"^{path}: set \\$KIT_PASSPHRASE$"):
        load_private(path)
    monkeypatch.setenv("KIT_PASSPHRASE", "horse")
    assert load_private(path).keyid == KEY.keyid


def test_a_missing_directory_fifo_or_huge_key_file_is_one_usage_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pub"
    huge.write_bytes(b"x" * (65 << 10))
    for path, words in (
        (tmp_path / "absent.pub", "cannot read public key (No such file or directory)"),
        (tmp_path, "cannot read public key (a directory)"),
        (fifo, "cannot read public key (not a regular file)"),
        (huge, "more than the 65536 a public key may hold"),
    ):
        with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load_public(path)


def test_the_policy_comes_from_keys_or_a_current_trust_root(tmp_path: Path) -> None:
    _, public = write_pair(KEY, tmp_path / "release")
    root = tmp_path / "trust.json"
    root.write_bytes(TrustRoot.create([KEY.public], threshold=1, expires=T0, products=("app",)).to_bytes())
    assert load_policy([public], None, None, now=T0).threshold == 1
    assert load_policy([], root, None, now=T0 - timedelta(seconds=1)).products == ("app",)
    with pytest.raises(PolicyError, match="trust root expired"):
        load_policy([], root, None, now=T0)
    with pytest.raises(UsageError, match="either --key or --trust-root"):
        load_policy([public], root, None, now=T0)
    with pytest.raises(UsageError, match="--threshold applies to --key"):
        load_policy([], root, 1, now=T0)
    with pytest.raises(UsageError, match="--threshold 2"):
        load_policy([public, public], None, 2, now=T0)
    with pytest.raises(UsageError, match="no trust given"):
        load_policy([], None, None, now=T0)


def test_the_file_store_keeps_one_record_per_name_and_channel(tmp_path: Path) -> None:
    state = tmp_path / "state"
    freshness = file_freshness(state, allow_downgrade=False)
    freshness.record("App/x", "stable", 3, T0)
    assert sorted(p.name for p in state.iterdir()) == ["_pp_x@stable.json"]
    assert FileFreshnessStore(state).load("App/x", "stable") == Seen(3, T0)
    with pytest.raises(PolicyError, match="rollback"):
        file_freshness(state, allow_downgrade=False).check("App/x", "stable", 2)
    assert freshness.directory == str(state)


def test_the_file_store_never_reads_through_a_link_and_names_damage(tmp_path: Path) -> None:
    store = FileFreshnessStore(tmp_path)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(Seen(1, T0).to_bytes("app", "stable"))
    store.file("app", "stable").symlink_to(target)
    with pytest.raises(UsageError, match="a symbolic link"):
        store.load("app", "stable")
    store.file("app", "stable").unlink()
    store.file("app", "stable").write_bytes(b"{}")
    with pytest.raises(UsageError, match="app@stable.json: anti-rollback state is damaged"):
        store.load("app", "stable")


def test_the_default_state_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "kit"))
    assert trust_inputs.default_state_dir() == tmp_path / "kit"
    monkeypatch.delenv("KIT_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert trust_inputs.default_state_dir() == tmp_path / "xdg" / "kitbuilder"
