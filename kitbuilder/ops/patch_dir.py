"""kit patch on an installed (extracted) kit directory: journaled, per-file atomic, rolls forward after a crash.

Order of work, all under an flock on the directory and all relative to one
open descriptor of it (no link inside it is ever followed):

1. the delta is verified in full through one open descriptor, and its target
   metadata checked (``delta_open.open_verified_delta``); nothing else reads it;
2. a journal left by a killed run is finished first (roll forward), but only
   when it belongs to this delta's base and target; staging without a journal
   is discarded;
3. every new or changed file is written under ``.kit-patch/`` and fsynced,
   every kept file is re-hashed;
4. the journal (the delta's base and target digests, the base manifest, the
   operations) is written, fsynced and renamed into place: the commit point;
5. the operations are carried out: deletions, then directories that must
   become files, then one rename per staged file (metadata last). Each step
   can run again after a kill at any instant and reach the same state;
6. the journal is removed, then the staging directory.

``.kit-patch`` is a reserved name (``core.paths``): no kit can ship it, so
no signed input can plant a journal.

This module drives the order above; ``patch_journal`` holds the journal, its
checks after a kill and the idempotent steps (2, 4, 5, 6), ``patch_staging``
the plan and the staged files (3).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from kitbuilder import faults
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, Manifest
from kitbuilder.errors import IntegrityError, KitError
from kitbuilder.ops.confined import Directory, host_error
from kitbuilder.ops.delta_open import open_verified_delta
from kitbuilder.ops.kitfile import read_installed_metadata
from kitbuilder.ops.patch_journal import (
    BASE_FILES,
    BASE_MANIFEST,
    JOURNAL,
    JOURNAL_TEMP,
    STAGING,
    Journal,
    Targets,
    carry_out,
    finish,
    hash_fd,
    recover,
    state_error,
    unsafe,
)
from kitbuilder.ops.patch_staging import Planner, stage
from kitbuilder.ops.verify import VerifyOptions, check_signed_metadata


@dataclass(frozen=True)
class DirPatchResult:
    directory: Path
    manifest: Manifest
    reused: int
    written: int
    removed: int
    rolled_forward: bool
    already_patched: bool = False


def patch_directory(
    directory: Path, delta_path: Path, *, options: VerifyOptions, allow_downgrade: bool = False
) -> DirPatchResult:
    """Patch the kit installed in ``directory`` with the delta at ``delta_path`` (see the module docstring)."""
    with open_verified_delta(delta_path, options) as delta, Directory.open(directory, what="kit directory") as root:
        root.lock(busy=f"{directory}: another kit patch is patching it; wait for it to finish")
        rolled_forward = recover(root, delta, options.caps)
        installed = read_installed_metadata(root, options.caps)
        _, _, base_manifest = check_signed_metadata(installed, options.policy)
        installed_sha = hashlib.sha256(installed.members[MANIFEST_JSON]).hexdigest()
        if installed_sha == delta.target_sha256:
            # Already patched (for example by the roll-forward above): nothing to do, and that is success, once
            # every file is seen to hold the signed content (as file mode verifies an already patched kit).
            _check_installed(root, base_manifest)
            files = len(base_manifest.files)
            return DirPatchResult(directory, base_manifest, files, 0, 0, rolled_forward, already_patched=True)
        delta.check_applies(base_manifest, installed_sha, directory, allow_downgrade=allow_downgrade)
        plan = Planner(root, delta, installed, base_manifest).plan()
        journal = Journal(
            base_sha256=installed_sha,
            target_sha256=delta.target_sha256,
            delta_sha256=delta.report.kit_sha256,
            operations=plan.operations,
        )
        staging = root.make_private_dir(STAGING)
        try:
            with staging:
                written = stage(root, staging, delta, plan, options.caps)
                faults.point("patch-dir-staged")
                if FILE_LIST in installed.members:
                    with staging.new_file(BASE_FILES) as out:
                        out.write(installed.members[FILE_LIST])
                with staging.new_file(BASE_MANIFEST) as out:
                    out.write(installed.members[MANIFEST_JSON])
                with staging.new_file(JOURNAL_TEMP) as out:
                    out.write(journal.to_bytes())
                try:
                    os.rename(JOURNAL_TEMP, JOURNAL, src_dir_fd=staging.fd, dst_dir_fd=staging.fd)
                except OSError as exc:
                    raise host_error(exc, staging.name(JOURNAL), "write") from exc
                staging.sync()
        except BaseException:
            # Not committed: the installed files are untouched; discard the staging (or leave it to the next run).
            with contextlib.suppress(KitError):
                root.remove_tree(STAGING, refuse=state_error)
            raise
        faults.point("patch-dir-committed")
        carry_out(root, journal, Targets(delta))
        finish(root)
        return DirPatchResult(directory, delta.target_manifest, plan.reused, written, plan.removed, rolled_forward)


# ---------------------------------------------------------------------------------------------------------------
# an already patched directory


def _check_installed(root: Directory, manifest: Manifest) -> None:
    """Every file ``manifest`` lists is a regular file under ``root`` with the signed content, else IntegrityError."""
    for item in manifest.files:
        fd = root.open_regular(item.path, refuse=unsafe)
        if fd is None or hash_fd(fd, root.name(item.path)) != item.sha256:
            raise IntegrityError(
                f"{root.name(item.path)}: missing or differs from the installed kit's signed manifest; "
                "reinstall the kit from a full kit"
            )
