"""kit patch on an installed (extracted) kit directory: journaled, per-file atomic, rolls forward after a crash.

Order of work: (1) every new or changed file is written under ``.kit-patch/``
in the directory and fsynced, every reused file is re-hashed; (2) a journal
of the renames and deletions is written and fsynced; (3) the journal is
carried out, each step an atomic rename or unlink; (4) the journal and the
staging directory are removed. A rerun that finds a journal finishes step 3
first (roll forward); one that finds staging without a journal discards it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.archive import reader
from kitbuilder.archive.reader import Caps
from kitbuilder.atomic import fsync_path, write_atomic
from kitbuilder.core import jsonio
from kitbuilder.core.dsse import Envelope
from kitbuilder.core.manifest import (
    ATTESTATIONS_DIR,
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SIGSTORE_BUNDLE,
    Manifest,
    metadata_names,
)
from kitbuilder.errors import ArchiveError, IntegrityError, PolicyError, UsageError
from kitbuilder.ops.delta import target_metadata
from kitbuilder.ops.verify import KitMetadata, VerifyOptions, check_policy, check_signed_metadata, open_kit, verify_kit

STAGING = ".kit-patch"
JOURNAL = "journal.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class DirPatchResult:
    directory: Path
    manifest: Manifest
    reused: int
    written: int
    removed: int
    rolled_forward: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(directory: Path, relative: str) -> Path:
    target = directory.joinpath(*relative.split("/"))
    if directory.resolve() not in target.resolve().parents:
        raise ArchiveError(f"{relative}: resolves outside {directory}")
    return target


def recover(directory: Path) -> bool:
    """Finish an interrupted patch (journal present) or discard its staging; True if it rolled forward."""
    staging = directory / STAGING
    journal = staging / JOURNAL
    if journal.exists():
        document = jsonio.load_object(journal.read_bytes(), what=str(journal))
        _carry_out(directory, document["operations"])
        shutil.rmtree(staging)
        fsync_path(directory)
        return True
    if staging.exists():
        shutil.rmtree(staging)
    return False


def _carry_out(directory: Path, operations: list[dict[str, Any]]) -> None:
    for operation in operations:
        target = _inside(directory, operation["path"])
        if operation["op"] == "delete":
            if target.exists():
                target.unlink()
            continue
        staged = directory / STAGING / operation["staged"]
        if staged.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            fsync_path(target.parent)
        elif not target.exists():
            raise IntegrityError(f"{operation['path']}: journal names {operation['staged']}, which is gone")


def _installed_metadata(directory: Path) -> KitMetadata:
    members: dict[str, bytes] = {}
    present = [SIGSTORE_BUNDLE] if (directory / SIGSTORE_BUNDLE).is_file() else []
    attestations = directory / ATTESTATIONS_DIR
    if attestations.is_dir():
        present += [f"{ATTESTATIONS_DIR}/{p.name}" for p in attestations.iterdir() if p.is_file()]
    for name in metadata_names(present):
        try:
            members[name] = (directory / name).read_bytes()
        except OSError as exc:
            raise UsageError(f"{directory}: not an installed kit ({name}: {exc.strerror})") from exc
    envelope = Envelope.from_bytes(members[MANIFEST_DSSE], what=f"{directory}/{MANIFEST_DSSE}")
    manifest = Manifest.from_bytes(members[MANIFEST_JSON], what=f"{directory}/{MANIFEST_JSON}")
    return KitMetadata(location=None, members=members, envelope=envelope, manifest=manifest)  # type: ignore[arg-type]


def patch_directory(
    directory: Path, delta_path: Path, *, options: VerifyOptions, allow_downgrade: bool = False
) -> DirPatchResult:
    rolled_forward = recover(directory)
    caps: Caps = options.caps
    delta_report = verify_kit(delta_path, options)
    info = delta_report.manifest.delta
    if info is None:
        raise UsageError(f"{delta_path}: not a delta kit")
    installed = _installed_metadata(directory)
    _, _, base_manifest = check_signed_metadata(installed, options.policy)
    installed_sha = hashlib.sha256(installed.members[MANIFEST_JSON]).hexdigest()
    if installed_sha == info.get("targetManifestSha256"):
        # Already patched (for example by the roll-forward above): nothing to do, and that is success.
        return DirPatchResult(directory, base_manifest, len(base_manifest.files), 0, 0, rolled_forward)
    if installed_sha != info["baseManifestSha256"]:
        raise PolicyError(
            f"{delta_path}: applies to the kit whose manifest has SHA-256 {info['baseManifestSha256'][:16]}…, "
            f"not to the one installed in {directory} (sequence {base_manifest.kit.sequence})"
        )
    staging = directory / STAGING
    with open_kit(delta_path) as delta_stream:
        target = target_metadata(delta_stream, delta_report.manifest, caps)
        _, _, target_manifest = check_signed_metadata(target, options.policy)
        check_policy(target_manifest, options)
        if target_manifest.kit.sequence <= base_manifest.kit.sequence and not allow_downgrade:
            raise PolicyError(
                f"{delta_path}: target sequence {target_manifest.kit.sequence} does not grow; "
                "refusing a downgrade (--allow-downgrade to override)"
            )
        staging.mkdir()
        operations: list[dict[str, Any]] = []
        reused = written = 0
        delta_index = reader.read_index(delta_stream, caps).index.by_path()
        base_paths = {f.path: f for f in base_manifest.files}
        for number, item in enumerate(target_manifest.files):
            current = _inside(directory, item.path)
            # Reused files are re-hashed: an installed tree may have been edited since it was verified.
            if item.path in base_paths and current.is_file() and _sha256(current) == item.sha256:
                reused += 1
                continue
            staged_name = f"{number:06d}"
            staged = staging / staged_name
            source = delta_index.get(item.path)
            if source is None or source.sha256 != item.sha256:
                donor = next((f for f in base_manifest.files if f.sha256 == item.sha256), None)
                donor_path = _inside(directory, donor.path) if donor else None
                if donor_path is None or not donor_path.is_file() or _sha256(donor_path) != item.sha256:
                    raise IntegrityError(f"{item.path}: neither the delta nor the installed kit holds its content")
                shutil.copyfile(donor_path, staged)
            else:
                data_digest = _extract_member(delta_stream, source, staged, caps)
                if data_digest != item.sha256:
                    raise IntegrityError(f"{item.path}: delta content differs from the signed target")
            fsync_path(staged)
            operations.append({"op": "replace", "path": item.path, "staged": staged_name})
            written += 1
        for number, name in enumerate(target.members):
            staged_name = f"meta-{number:03d}"
            (staging / staged_name).write_bytes(target.members[name])
            fsync_path(staging / staged_name)
            operations.append({"op": "replace", "path": name, "staged": staged_name})
        target_paths = {f.path for f in target_manifest.files}
        removed = sorted(set(base_paths) - target_paths)
        # Optional metadata the old kit had and the new one has not (an attestation, a Sigstore bundle).
        removed += sorted(set(installed.members) - set(target.members))
        operations += [{"op": "delete", "path": path} for path in removed]
        fsync_path(staging)
        write_atomic(staging / JOURNAL, jsonio.dump_pretty({"operations": operations}))
    _carry_out(directory, operations)
    shutil.rmtree(staging)
    fsync_path(directory)
    return DirPatchResult(directory, target_manifest, reused, written, len(removed), rolled_forward)


def _extract_member(stream: Any, entry: Any, destination: Path, caps: Caps) -> str:
    """Decompress one member of the (verified) delta into ``destination``; returns its SHA-256."""
    return reader.read_member_to(stream, entry, caps, destination)
