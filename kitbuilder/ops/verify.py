"""kit verify: check a kit end to end against locally held keys, without extracting anything.

Two steps over one open file. First the small signed metadata is read through
the index and checked (signatures, manifest = signed predicate, SHA256SUMS,
policy). Then the whole stream is decompressed once from byte 0 and every
member is checked against those signed facts, which also bound how much any
member may decompress to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder import faults
from kitbuilder.archive import reader, scan2
from kitbuilder.archive.hashing import HashWorker, QueuedDigest
from kitbuilder.archive.index import IndexEntry, MemberSpan
from kitbuilder.archive.reader import Caps, Expected
from kitbuilder.core import timefmt
from kitbuilder.core.filelist import FileTable
from kitbuilder.core.jobs import KitJobs
from kitbuilder.core.manifest import (
    IMAGES_DIR,
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    SIGSTORE_BUNDLE,
    FileEntry,
    Manifest,
)
from kitbuilder.errors import ArchiveError, IntegrityError, PolicyError

# The attestation checks live in attestations; re-exported here, where callers have always found them.
from kitbuilder.ops.attestations import MAX_DETACHED as MAX_DETACHED
from kitbuilder.ops.attestations import MAX_PREDICATE_DEPTH as MAX_PREDICATE_DEPTH
from kitbuilder.ops.attestations import AttestationReport as AttestationReport
from kitbuilder.ops.attestations import KeylessCheck as KeylessCheck
from kitbuilder.ops.attestations import check_attestation as check_attestation
from kitbuilder.ops.attestations import check_detached as check_detached
from kitbuilder.ops.attestations import check_kit_attestations
from kitbuilder.ops.attestations import checksum_keyid as checksum_keyid

# The one metadata reader lives in kitfile; re-exported here, where callers have always found it.
from kitbuilder.ops.kitfile import KitMetadata as KitMetadata
from kitbuilder.ops.kitfile import Metadata as Metadata
from kitbuilder.ops.kitfile import open_kit as open_kit
from kitbuilder.ops.kitfile import read_metadata as read_metadata

# The signed-metadata checks live in signed_metadata; re-exported here, where callers have always found them.
from kitbuilder.ops.signed_metadata import check_index_against as check_index_against
from kitbuilder.ops.signed_metadata import check_signed_metadata as check_signed_metadata
from kitbuilder.trust.freshness import Freshness
from kitbuilder.trust.signatures import TrustPolicy


@dataclass(frozen=True)
class VerifyOptions:
    policy: TrustPolicy
    now: datetime
    product: str | None = None
    channel: str | None = None
    caps: Caps = field(default_factory=Caps)
    freshness: Freshness | None = None
    require_provenance: bool = False
    # Detached in-toto envelopes (KIT.intoto.jsonl) whose subject must be this kit file's SHA-256.
    detached_attestations: tuple[Path, ...] = ()
    keyless: KeylessCheck | None = None
    # Format 2: worker threads decoding and hashing frames (None: the usable cores).
    threads: int | None = None


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    kit_sha256: str
    manifest: Manifest
    signers: tuple[str, ...]
    checksum_signer: str | None
    checks: tuple[str, ...]
    members: int
    payload_bytes: int
    kit_bytes: int
    attestations: tuple[AttestationReport, ...] = ()
    sigstore: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        kit = self.manifest.kit
        return {
            "reportVersion": 1,
            "ok": True,
            "kit": {"path": str(self.path), "sha256": self.kit_sha256, "bytes": self.kit_bytes, **kit.to_json()},
            "signers": list(self.signers),
            "checksumSigner": self.checksum_signer,
            "checks": list(self.checks),
            "files": len(self.manifest.files),
            "members": self.members,
            "payloadBytes": self.payload_bytes,
            "delta": None if self.manifest.delta is None else self.manifest.delta.to_json(),
            "attestations": [a.to_json() for a in self.attestations],
            "sigstore": self.sigstore,
        }


def build_mtime(signed: Manifest) -> int:
    """The mtime every tar header of the kit carries: the signed ``build.mtime`` (absent in old kits: 0).

    Format 2 writes 0 always (the schema refuses any other ``build.mtime``)."""
    if signed.format_version == 2:
        return 0
    return signed.build.mtime or 0


def check_policy(manifest: Manifest, options: VerifyOptions) -> None:
    kit = manifest.kit
    if options.now >= kit.expires_at:
        raise PolicyError(f"kit {kit.name} {kit.version} expired at {kit.expires}; obtain a newer kit")
    if options.product is not None and kit.product != options.product:
        raise PolicyError(f"kit is for product {kit.product!r}, this host expects {options.product!r}")
    if options.channel is not None and kit.channel != options.channel:
        raise PolicyError(f"kit is for channel {kit.channel!r}, this host expects {options.channel!r}")
    if options.policy.products and kit.product not in options.policy.products:
        raise PolicyError(
            f"trust root does not vouch for product {kit.product!r} (only {', '.join(options.policy.products)})"
        )


def _expectations(metadata: KitMetadata, manifest: Manifest) -> dict[str, Expected]:
    index = metadata.location.index
    by_path = index.by_path()
    if len(by_path) != len(index.members):
        raise ArchiveError("kit index lists a member twice")
    expected: dict[str, Expected] = {}
    for item in manifest.files:
        entry = by_path.get(item.path)
        if entry is None:
            raise IntegrityError(f"{item.path}: in the signed manifest but missing from the archive (and its index)")
        if not same_as_signed(entry, item, manifest):
            raise ArchiveError(f"{item.path}: archive index entry differs from the signed manifest")
        expected[item.path] = Expected(item.path, item.size, item.sha256, item.offset, item.length, item.frame_sha256)
    for name in metadata.members:
        entry = by_path[name]
        assert isinstance(entry, IndexEntry)  # format 1 (format 2 is checked by check_index_against)
        expected[name] = Expected(
            name,
            entry.size,
            hashlib.sha256(metadata.members[name]).hexdigest(),
            entry.offset,
            entry.length,
            entry.frame_sha256,
        )
    extra = sorted(set(by_path) - set(expected))
    if extra:
        raise IntegrityError(f"{extra[0]}: in the archive index but not in the signed manifest")
    return expected


def same_as_signed(entry: IndexEntry | MemberSpan, item: FileEntry, manifest: Manifest) -> bool:
    """Whether an index entry places and describes a file as the signed manifest does (format 1 or 2)."""
    if isinstance(entry, IndexEntry):
        signed = (item.offset, item.length, item.size, item.sha256, item.frame_sha256)
        return (entry.offset, entry.length, entry.size, entry.sha256, entry.frame_sha256) == signed
    if (entry.frame, entry.at, entry.size, entry.sha256) != (item.frame, item.at, item.size, item.sha256):
        return False
    return entry.frames == manifest.frames[entry.frame : entry.frame + len(entry.frames)]


def read_signed_file(
    stream: BinaryIO, index: Mapping[str, IndexEntry | MemberSpan], signed: FileEntry, caps: Caps
) -> bytes:
    """One (small) payload file through the index, checked against its entry in the signed manifest.

    The index entry must say what the manifest says; ``reader.read_member`` then checks the
    bytes against that entry, so the content is hashed once.
    """
    entry = index.get(signed.path)
    if entry is None:
        raise IntegrityError(f"{signed.path}: listed in the manifest but not in the archive index")
    if (entry.size, entry.sha256) != (signed.size, signed.sha256):
        raise IntegrityError(f"{signed.path}: archive index entry differs from the signed manifest")
    if isinstance(entry, MemberSpan) and (entry.frame, entry.at) != (signed.frame, signed.at):
        raise IntegrityError(f"{signed.path}: archive index entry differs from the signed manifest")
    return reader.read_member(stream, entry, caps)


def _signed_file_reader(stream: BinaryIO, metadata: KitMetadata, caps: Caps) -> Callable[[FileEntry], bytes]:
    """``read_signed_file`` for any number of files, locating the members once (on the first read), not per file:
    ``by_path`` walks every member, and a kit may hold many jobs among very many files."""
    located: dict[str, IndexEntry | MemberSpan] = {}

    def read(signed: FileEntry) -> bytes:
        if not located:
            located.update(metadata.location.index.by_path())
        return read_signed_file(stream, located, signed, caps)

    return read


def _check_images(stream: BinaryIO, metadata: KitMetadata, manifest: Manifest, caps: Caps) -> str | None:
    """The OCI layout under images/ against itself: blob names, descriptor sizes, references, nothing unreferenced.

    Runs after the scan, so every member's content already matched the signed digests; the JSON
    documents are read again through the index and checked against those digests once more.
    """
    prefix = f"{IMAGES_DIR}/"
    files = manifest.files
    # By path first: a FileEntry is made per file handed out, and most kits have no image at all.
    paths = files.paths if isinstance(files, FileTable) else [f.path for f in files]
    signed = {path: files[number] for number, path in enumerate(paths) if path.startswith(prefix)}
    if not signed and not manifest.images:
        return None
    from kitbuilder.oci.check import check_layout

    by_path = metadata.location.index.by_path()
    entries = {path: (f.size, f.sha256) for path, f in signed.items()}
    summary = check_layout(
        entries, lambda path: read_signed_file(stream, by_path, signed[path], caps), records=manifest.images
    )
    return (
        f"{IMAGES_DIR}/: OCI layout of {len(summary.images)} image(s), {summary.blob_count} blobs: every blob "
        "matches its digest and size, every reference is present, nothing unreferenced"
    )


class _HashingReader:
    """Wraps the kit stream so its SHA-256 is computed (on the hash worker) from the same single read (format 1).

    The bytes from ``tail_from`` on (index and footer, parsed before the scan) are hashed apart too, as they pass
    (the frame reader reads ahead into them), for ``IndexLocation.check_unchanged``."""

    def __init__(self, stream: BinaryIO, worker: HashWorker, tail_from: int) -> None:
        self._stream = stream
        self.digest = QueuedDigest(worker, hashlib.sha256())
        self.tail = hashlib.sha256()
        self._tail_from = tail_from
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        start, self._position = self._position, self._position + len(data)
        if self._position > self._tail_from:
            self.tail.update(data[max(0, self._tail_from - start) :])
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = self._stream.seek(offset, whence)
        return self._position


def _scan(
    path: Path,
    stream: BinaryIO,
    metadata: KitMetadata,
    manifest: Manifest,
    options: VerifyOptions,
    on_bytes: Callable[[int], None] | None,
    extract_to: Path | None,
    extract_only: Callable[[str], bool] | None,
) -> tuple[reader.ScanResult, str]:
    """The streaming pass over the whole file against the signed manifest; returns its result and the file's SHA-256."""
    faults.point("verify-scan")  # the footer, index and signatures are read; nothing of the payload yet
    if metadata.location.index.format_version == 2:
        return _scan2(
            path, stream, metadata, options, on_bytes=on_bytes, extract_to=extract_to, extract_only=extract_only
        )
    expected = _expectations(metadata, manifest)
    # Content and frame digests on one worker, the whole file's digest on another: on two cores the
    # three SHA-256 passes no longer queue behind one thread while the main thread decompresses.
    worker = HashWorker()
    file_worker = HashWorker()
    hashing = _HashingReader(stream, file_worker, metadata.location.index_offset)
    try:
        result = reader.scan(
            hashing,  # type: ignore[arg-type]
            expected=expected,
            location=metadata.location,
            caps=options.caps,
            on_bytes=on_bytes,
            extract_to=extract_to,
            hasher=worker,
            extract_only=extract_only,
            mtime=build_mtime(manifest),
        )
        # The scan stopped at the index; hash the tail so the report names the whole file's digest.
        at = stream.tell()
        while at < metadata.location.file_size and (
            piece := hashing.read(min(1 << 20, metadata.location.file_size - at))
        ):
            at += len(piece)
        metadata.location.check_unchanged(path, at, hashing.tail.hexdigest(), stream.read(1))
        hashing.digest.flush()
        worker.sync()
        file_worker.sync()
    finally:
        worker.close()
        file_worker.close()
    return result, hashing.digest.hexdigest()


def _scan2(
    path: Path,
    stream: BinaryIO,
    metadata: KitMetadata,
    options: VerifyOptions,
    *,
    on_bytes: Callable[[int], None] | None,
    extract_to: Path | None,
    extract_only: Callable[[str], bool] | None,
) -> tuple[reader.ScanResult, str]:
    """Format 2: the scan's workers read the frames and feed the whole file's digest in order; the tail (index,
    footer) is hashed here. check_signed_metadata matched the index with the signed manifest: its map is the signed
    one."""
    location = metadata.location
    digest = hashlib.sha256()
    scanned = scan2.scan(
        stream,
        location.index,
        location.index_offset,
        max_window=options.caps.max_window,
        on_bytes=on_bytes,
        extract_to=extract_to,
        extract_only=extract_only,
        threads=options.threads,
        file_digest=digest,
    )
    read_at = scan2.reader_at(stream)
    offset = location.index_offset
    tail = hashlib.sha256()
    while offset < location.file_size and (piece := read_at(offset, min(1 << 20, location.file_size - offset))):
        digest.update(piece)
        tail.update(piece)
        offset += len(piece)
    location.check_unchanged(path, offset, tail.hexdigest(), read_at(offset, 1))
    return reader.ScanResult(scanned.members, scanned.payload_bytes, location.file_size), digest.hexdigest()


def _check_lines(
    options: VerifyOptions,
    manifest: Manifest,
    *,
    signers: tuple[str, ...],
    checksum_signer: str | None,
    members: int,
    downgrade_note: str | None,
    images_check: str | None,
    attestations: tuple[AttestationReport, ...],
    sigstore: dict[str, Any] | None,
) -> tuple[str, ...]:
    """What the report says was checked, one line per check, in the order verify_kit ran them."""
    kit = manifest.kit
    checks: tuple[str, ...] = (
        "archive index and footer well-formed",
        f"{MANIFEST_DSSE} signed by {len(signers)} trusted key(s) (threshold {options.policy.threshold})",
        f"{MANIFEST_JSON} equals the signed predicate",
        f"{SHA256SUMS} matches the manifest; {SHA256SUMS_SIG} "
        + ("valid" if checksum_signer else "made by a key not trusted here (not checked; DSSE covers SHA256SUMS)"),
        f"not expired (expires {manifest.kit.expires}, checked at {timefmt.format_utc(options.now)})",
        f"{members} members safe, sizes and SHA-256 match; nothing missing or unlisted",
        "tar stream ends exactly at the index; no trailing data",
    )
    if options.freshness is not None:
        checks += (
            downgrade_note
            or f"not a rollback: sequence {kit.sequence} >= the highest accepted here "
            f"(state in {options.freshness.directory})",
        )
    if images_check is not None:
        checks += (images_check,)
    checks += tuple(
        f"{a.path}: {a.predicate_type} signed by {len(a.signers)} trusted key(s); "
        + ("subject is this kit file" if a.detached else f"subjects {', '.join(a.subjects)} match")
        for a in attestations
    )
    if sigstore is not None and sigstore["kind"] == "key":
        checks += (
            f"{SIGSTORE_BUNDLE}: Sigstore bundle over {SHA256SUMS} signed by trusted key {sigstore['signer']}"
            if sigstore["signer"]
            else f"{SIGSTORE_BUNDLE}: made by a key not trusted here (not checked; DSSE covers SHA256SUMS)",
        )
    elif sigstore is not None:
        checks += (
            f"{sigstore['bundle']}: keyless Sigstore signature over {SHA256SUMS} by {sigstore['identity']} "
            f"({sigstore['issuer']}), transparency log index {sigstore['logIndex']}",
        )
    if manifest.delta is not None:
        checks += (
            f"this is a DELTA kit for base {manifest.kit.name} sequence {manifest.delta.base_sequence} "
            f"(manifest sha256 {manifest.delta.base_manifest_sha256}); use `kit patch` to apply it",
        )
    return checks


@dataclass(frozen=True)
class MetadataCheck:
    """What ``check_kit_metadata`` checked: the kit's metadata (format 2: its signed file list read and its full
    index built and checked against the signed manifest), signers, attestations; its payload not read."""

    metadata: KitMetadata
    manifest: Manifest
    signers: tuple[str, ...]
    checksum_signer: str | None
    downgrade_note: str | None
    attestations: tuple[AttestationReport, ...]
    sigstore: dict[str, Any] | None


def check_kit_metadata(stream: BinaryIO, options: VerifyOptions) -> MetadataCheck:
    """The first half of ``verify_kit``: the signed metadata read through the index and checked (signatures,
    manifest, file list, SHA256SUMS, the index against them), policy, anti-rollback (checked, not recorded) and
    the attestations inside the kit. Nothing of the payload is read: a caller that stops here must check every
    payload byte it uses against the signed digests itself (``kit patch`` on a file does, frame by frame)."""
    # Format 2: the file list is read after the signatures, bounded by the signed count (check_signed_metadata).
    metadata = read_metadata(stream, options.caps, defer_files=True)
    signers, checksum_signer, manifest = check_signed_metadata(metadata, options.policy)
    kit = manifest.kit
    downgrade_note = None
    policy_options = options
    if options.freshness is not None:
        # Judge expiry against the latest time this host has seen, so a clock set back does not help.
        effective = options.freshness.effective_now(kit.name, kit.channel, options.now)
        policy_options = dataclasses.replace(options, now=effective)
        downgrade_note = options.freshness.check(kit.name, kit.channel, kit.sequence)
    check_policy(manifest, policy_options)
    attestations, sigstore = check_kit_attestations(
        metadata.members,
        metadata.envelope,
        manifest,
        policy=options.policy,
        keyless=options.keyless,
        require_provenance=options.require_provenance,
    )
    return MetadataCheck(metadata, manifest, signers, checksum_signer, downgrade_note, attestations, sigstore)


def verify_kit(
    path: Path,
    options: VerifyOptions,
    *,
    on_bytes: Callable[[int], None] | None = None,
    extract_to: Path | None = None,
    extract_only: Callable[[str], bool] | None = None,
    stream: BinaryIO | None = None,
) -> VerifyReport:
    """Raise a KitError subclass at the first failed check; return the report when all pass.

    With ``extract_to`` (an empty directory) the members are written there from
    the same single read that verifies them, so what is applied afterwards is
    exactly what was verified; on failure the caller discards the directory.
    With ``stream`` (the kit, opened by the caller with ``open_kit``) that
    descriptor is verified and left open, so the caller goes on using exactly
    the bytes verified here instead of opening ``path`` again.
    """
    with contextlib.ExitStack() as owned:
        if stream is None:
            stream = owned.enter_context(open_kit(path))
        checked = check_kit_metadata(stream, options)
        metadata, manifest, kit = checked.metadata, checked.manifest, checked.manifest.kit
        signers, checksum_signer, downgrade_note = checked.signers, checked.checksum_signer, checked.downgrade_note
        attestations, sigstore = checked.attestations, checked.sigstore
        result, kit_sha256 = _scan(path, stream, metadata, manifest, options, on_bytes, extract_to, extract_only)
        images_check = _check_images(stream, metadata, manifest, options.caps)
        # What apply will read (component options, checks, backfill jobs), parsed as apply parses it: exit 5 here.
        KitJobs.from_manifest(manifest, _signed_file_reader(stream, metadata, options.caps))
    for detached in options.detached_attestations:
        attestations += tuple(check_detached(detached, kit_sha256, options.policy, members=result.members))
    if options.freshness is not None:
        options.freshness.record(kit.name, kit.channel, kit.sequence, options.now)
    checks = _check_lines(
        options,
        manifest,
        signers=signers,
        checksum_signer=checksum_signer,
        members=result.members,
        downgrade_note=downgrade_note,
        images_check=images_check,
        attestations=attestations,
        sigstore=sigstore,
    )
    return VerifyReport(
        path=path,
        kit_sha256=kit_sha256,
        manifest=manifest,
        signers=signers,
        checksum_signer=checksum_signer,
        checks=checks,
        members=result.members,
        payload_bytes=result.payload_bytes,
        kit_bytes=metadata.location.file_size,
        attestations=attestations,
        sigstore=sigstore,
    )
