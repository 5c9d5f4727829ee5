"""The reading side of a delta kit: its signed metadata checked (file mode) or the whole delta verified
(directory mode), with its target's metadata, through one open descriptor (docs/delta.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder import faults
from kitbuilder.archive import reader2
from kitbuilder.archive.index import KitIndex, MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import MANIFEST_JSON, Manifest
from kitbuilder.errors import ArchiveError, FormatError, IntegrityError, PolicyError, UsageError
from kitbuilder.ops.delta import (
    carried_frames,
)
from kitbuilder.ops.delta_content import Carried, carried_contents
from kitbuilder.ops.frame_reuse import full_kit_needed
from kitbuilder.ops.kitfile import (
    TARGET_DIR,
    Metadata,
    open_kit,
    read_metadata,
    read_target_metadata,
)
from kitbuilder.ops.verify import (
    VerifyOptions,
    VerifyReport,
    check_kit_metadata,
    check_policy,
    check_signed_metadata,
    verify_kit,
)
from kitbuilder.trust.signatures import TrustPolicy


@dataclass(frozen=True)
class DeltaMetadata:
    """A delta kit whose signed metadata is checked, with the open descriptor it was read through, its full index
    (checked against ``manifest``) and its checked target metadata.

    Everything a patch takes from the delta is read through ``stream`` and checked against ``manifest`` (the delta's
    signed manifest) or ``target``: the path is never opened again, so a file renamed over it mid-run is never used.
    File mode: ``target_manifest`` lacks its files until ``target_files`` has read the target's file list.
    """

    path: Path
    stream: BinaryIO
    manifest: Manifest
    index: KitIndex
    base_sha256: str
    target: Metadata
    target_manifest: Manifest
    target_sha256: str
    carried: dict[str, MemberSpan]  # target frame digest -> the delta member carrying it (``carried_frames``)
    # Target SHA-256 -> the content member carrying it (``carried_contents``): checked when the delta is opened, in
    # both modes, whether or not a frame needs it, so a member no mode would use is refused in both.
    contents: dict[str, Carried]

    def target_files(self, policy: TrustPolicy) -> Manifest:
        """The target's signed manifest with its files: its file list read through ``stream``, bounded by the
        signed count, parsed and checked against the manifest and SHA256SUMS as any kit's (``load_files``), the
        signatures checked again with it (``check_signed_metadata``)."""
        if not self.target.files_pending:
            return self.target_manifest
        return check_signed_metadata(self.target, policy)[2]

    def check_applies(self, base: Manifest, base_sha256: str, shown: object, *, allow_downgrade: bool) -> None:
        """PolicyError unless this delta turns exactly ``base`` (its manifest digest) into a newer kit of that name."""
        sequence = None if self.manifest.delta is None else self.manifest.delta.base_sequence
        if base_sha256 != self.base_sha256:
            raise PolicyError(
                f"{self.path}: this delta applies to the kit whose manifest has SHA-256 "
                f"{self.base_sha256[:16]}… (sequence {sequence}), not to "
                f"{shown} ({base.kit.name} sequence {base.kit.sequence})"
            )
        if self.target_manifest.kit.name != base.kit.name:
            raise PolicyError(f"{self.path}: delta is for kit {self.target_manifest.kit.name}, base is {base.kit.name}")
        if self.target_manifest.kit.sequence <= base.kit.sequence and not allow_downgrade:
            raise PolicyError(
                f"{self.path}: target sequence {self.target_manifest.kit.sequence} does not grow from the base's "
                f"{base.kit.sequence}; refusing a downgrade (--allow-downgrade to override)"
            )


@dataclass(frozen=True)
class VerifiedDelta(DeltaMetadata):
    """A delta kit verified in full (``kit verify``'s report: every frame and member decoded and checked), as
    directory mode needs it: it stages files from the carried frames' decompressed contents."""

    report: VerifyReport


@contextlib.contextmanager
def open_verified_delta(path: Path, options: VerifyOptions) -> Iterator[VerifiedDelta]:
    """Open ``path`` once, verify it in full through that descriptor, check its target metadata (``_check_delta``);
    yield both."""
    with open_kit(path) as stream:
        report = verify_kit(path, options, stream=stream)
        # Between verifying and using: kill/swap tests hook here; only ``stream`` is used from now on.
        faults.point("patch-verified")
        index = read_metadata(stream, options.caps).location.index
        checked = _check_delta(path, stream, report.manifest, index, options, keep_file_list=True)
        yield VerifiedDelta(**{f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)}, report=report)


@contextlib.contextmanager
def open_delta_metadata(path: Path, options: VerifyOptions) -> Iterator[DeltaMetadata]:
    """Open ``path`` once and check its signed metadata as ``kit verify`` does (signatures, manifest, file list,
    index, policy, anti-rollback: recorded once all passed), but not its payload; check its target metadata.

    For ``kit patch`` on a kit file, which decompresses nothing of the payload: every byte it takes from the delta
    is checked against a signed digest before it lands under the final name (a carried frame: the target's signed
    frame digest, hashed as it lies in the output; a ``delta/target/`` member: its content digest as it is read,
    its frames' digests as they are copied). The delta's frames must tile and match its signed manifest and file
    list (checked on the index, as verify checks it), and the carried members' header frames are checked here
    (``_check_carried_frames``). What only a full scan adds is decoding the carried data frames the target takes
    (their digests are the target's signed ones: what lands is what the target's signer built) and the delta
    file's own digest.
    """
    with open_kit(path) as stream:
        checked = check_kit_metadata(stream, options)
        faults.point("patch-verified")
        manifest = checked.manifest
        # The target's file list is read by the caller (``target_files``), while it copies the payload.
        delta = _check_delta(path, stream, manifest, checked.metadata.location.index, options, keep_file_list=False)
        _check_carried_frames(delta, options.caps)
        if options.freshness is not None:
            # As verify_kit records it: the delta's kit block is the new kit's (docs/delta.md, anti-rollback).
            options.freshness.record(manifest.kit.name, manifest.kit.channel, manifest.kit.sequence, options.now)
        yield delta


def _check_carried_frames(delta: DeltaMetadata, caps: Caps) -> None:
    """What a full verify would check of the ``delta/frames/…`` members that file mode does not copy: each member's
    header frame (its signed digest, then the exact tar header kit writes for that name and size) and the data frame
    of any member the target does not take (its signed digest, decoded). A few hundred small reads for a delta of a
    1% change; the data frames the target takes are hashed as they are copied, not here."""
    wanted = {frame.sha256 for frame in delta.target_manifest.frames}
    window = caps.max_window
    for digest, span in delta.carried.items():
        try:
            header = reader2.read_frame(delta.stream, span.frames[0], span.frame, max_window=window, against="signed")
            reader2.check_member(header, span, against="signed")
            if digest not in wanted:
                reader2.read_frame(delta.stream, span.frames[1], span.frame + 1, max_window=window, against="signed")
        except (ArchiveError, IntegrityError) as exc:
            raise type(exc)(f"{delta.path}: {span.path}: {exc.message}; the delta is corrupt, obtain it again") from exc


def _check_delta(
    path: Path, stream: BinaryIO, manifest: Manifest, index: KitIndex, options: VerifyOptions, *, keep_file_list: bool
) -> DeltaMetadata:
    """The delta's own rules on its checked ``manifest`` and ``index``, and its target metadata, checked.

    The target's ``manifest.json`` must have the digest the delta signed as ``targetManifestSha256``
    (IntegrityError), and its signed metadata must verify and pass the policy checks with the same trust.
    """
    info = manifest.delta
    if manifest.format_version != 2:
        raise full_kit_needed(path, "the delta")
    if info is None:
        raise UsageError(f"{path}: not a delta kit (its manifest has no delta block); use it as a full kit")
    target = read_target_metadata(
        stream, options.caps, index=index, keep_file_list=keep_file_list, defer_files=not keep_file_list
    )
    target_sha256 = hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest()
    if info.target_manifest_sha256 is None:
        raise FormatError(
            f"{path}: {MANIFEST_JSON}: delta: targetManifestSha256 is missing, so {TARGET_DIR}/{MANIFEST_JSON} "
            "cannot be checked; rebuild the delta with this kit"
        )
    if target_sha256 != info.target_manifest_sha256:
        raise IntegrityError(
            f"{path}: {TARGET_DIR}/{MANIFEST_JSON} has SHA-256 {target_sha256[:16]}…, the delta signed "
            f"{info.target_manifest_sha256[:16]}… as its target; the delta is corrupt, obtain it again"
        )
    _, _, target_manifest = check_signed_metadata(target, options.policy, files=keep_file_list)
    check_policy(target_manifest, options)
    carried = carried_frames(manifest, path)
    contents = carried_contents(manifest, path)
    return DeltaMetadata(
        path=path,
        stream=stream,
        manifest=manifest,
        index=index,
        base_sha256=info.base_manifest_sha256,
        target=target,
        target_manifest=target_manifest,
        target_sha256=target_sha256,
        carried=carried,
        contents=contents,
    )
