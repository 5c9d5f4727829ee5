"""An adversarial pass over `kit patch` (file and directory mode) and `kit build --delta-from`.

Each test is named after a defect this pass found and asserts the behaviour the docs promise
(docs/delta.md, docs/trust-model.md "What kit patch guarantees"): the exit code, one line on
stderr, nothing created, changed or deleted outside the target, and convergence after a kill.
Kills use the KIT_FAULT hook in a child process; nothing here sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KitEnv
from tests.integration.test_hostile_patch import (
    Release,
    _build,
    _cli,
    _kit_tree,
    _make_release,
    _one_line,
    _tree,
)


@pytest.fixture
def release(kit_env: KitEnv) -> Release:
    return _make_release(kit_env)


# ---------------------------------------------------------------------------------------------------------------
# directory mode: the journal kit writes must be one kit reads back


def _many_deep_trees_become_a_file(kit_env: KitEnv) -> Release:
    """docs/operator/a: 240 directory chains 64 deep in the base, one plain file in the target."""
    docs = kit_env.root / "src/docs"
    for number in range(240):
        chain = docs / "a" / f"{number:03d}" / "/".join(["d"] * 64)
        chain.mkdir(parents=True)
        (chain / "f").write_text(f"{number}\n")

    def collapse(src: Path) -> None:
        shutil.rmtree(src / "docs/a")
        (src / "docs/a").write_text("now a file\n")

    return _make_release(kit_env, collapse)


@pytest.mark.slow
def test_journal_for_a_deep_directory_becoming_a_file_is_read_back_after_a_kill(
    kit_env: KitEnv, tmp_path: Path
) -> None:
    """A journal with one step per removed directory outgrew the bound its own reader applies: a kill after the
    commit left a journal every rerun refused as "kit did not write this journal"."""
    deep = _many_deep_trees_become_a_file(kit_env)
    installed = deep.install(tmp_path / "installed")
    killed = deep.patch_dir(installed, fault="patch-dir-committed")
    assert killed.returncode == 137, killed.stderr
    rerun = deep.patch_dir(installed)
    assert rerun.returncode == 0, rerun.stderr
    assert "already patched" in rerun.stdout
    assert _kit_tree(installed) == deep.expected
    assert not (installed / ".kit-patch").exists()
