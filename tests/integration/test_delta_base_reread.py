"""A delta build's base holds no file table while the new kit is built; its plan reads the base's list again.

That second read goes through the descriptor verified when the build began and must find the verified manifest
(by its SHA-256): a base rewritten in place meanwhile, even as another kit validly signed by the same key, is
refused [4] with one line naming the base, never planned against. Real kits, real signatures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kitbuilder.archive.reader import Caps
from kitbuilder.errors import IntegrityError
from kitbuilder.ops.frame_reuse import BaseFrames
from kitbuilder.ops.kitfile import open_kit, read_metadata
from kitbuilder.ops.trust_inputs import load_private
from kitbuilder.trust.signatures import TrustPolicy
from tests.factories.cli import KitEnv, run_kit


def _build(kit_env: KitEnv, out: Path) -> Path:
    result = run_kit(
        "build", kit_env.spec, "--key", kit_env.ed_key, "--out", out, env={"SOURCE_DATE_EPOCH": "1767225600"}
    )
    assert result.exit_code == 0, result.output
    return out


def _policy(kit_env: KitEnv) -> TrustPolicy:
    return TrustPolicy(keys=(load_private(kit_env.ed_key).public,), threshold=1)


def test_the_plan_reads_the_verified_base_list_again(kit_env: KitEnv) -> None:
    base_path = _build(kit_env, kit_env.root / "base.kit.tar.zst")
    with open_kit(base_path) as stream:
        expected = list(read_metadata(stream, Caps()).manifest.files)
    base = BaseFrames(base_path, _policy(kit_env))
    try:
        assert list(base.manifest.files) == []  # not held while the new kit is built
        assert list(base.files()) == expected
    finally:
        base.close()


def test_a_base_rewritten_in_place_is_refused_when_read_again(kit_env: KitEnv) -> None:
    base_path = _build(kit_env, kit_env.root / "base.kit.tar.zst")
    docs = kit_env.root / "src/docs"
    (docs / "added-later.md").write_text("a file the base does not have\n")
    other = _build(kit_env, kit_env.root / "other.kit.tar.zst")
    base = BaseFrames(base_path, _policy(kit_env))
    try:
        # The same file (inode) the build holds open, now another kit signed by the same key.
        with base_path.open("r+b") as handle, other.open("rb") as source:
            handle.truncate(0)
            shutil.copyfileobj(source, handle)
        with pytest.raises(IntegrityError) as raised:
            base.files()
    finally:
        base.close()
    message = raised.value.message
    assert str(base_path) in message and "manifest.json changed" in message and "\n" not in message
    assert raised.value.exit_code == 4
