"""The signed metadata of a kit checked against itself and the index: signatures, statement, manifest, file list,
SHA256SUMS, and (format 2) the unsigned index against all of them (docs/format.md §8.14).

Works on what ``kitfile`` read; the only read it causes is the format-2 file list, after the signatures, through
the reader ``kitfile`` set up (``load_files``), so the work it costs is bounded by the signed file count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from kitbuilder.archive import layout
from kitbuilder.archive.index import KitIndex, MemberEntry
from kitbuilder.core import checksums, jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    Manifest,
    MetadataBudget,
)
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement
from kitbuilder.errors import ArchiveError, FormatError, IntegrityError
from kitbuilder.ops.attestations import checksum_keyid
from kitbuilder.ops.kitfile import KitMetadata, Metadata, load_files
from kitbuilder.trust.signatures import TrustPolicy, verify_detached, verify_envelope


def check_signed_metadata(
    metadata: Metadata, policy: TrustPolicy, *, files: bool = True
) -> tuple[tuple[str, ...], str | None, Manifest]:
    """Signatures, statement, manifest, file list and SHA256SUMS against each other; returns signers and the signed
    manifest (format 2: with its files, read from the file list after the signatures, ``kitfile.load_files``).
    Format 2 without ``files`` (kit inspect without --files): the list is left unread, so are the checks that need
    it (sboms paths, the index's payload); the signatures, statement, subjects and SHA256SUMS.sig are checked."""
    envelope = metadata.envelope
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"{MANIFEST_DSSE}: payloadType is {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE}")
    signers = verify_envelope(envelope, policy=policy, what=MANIFEST_DSSE)
    head = metadata.manifest
    if head.format_version == 2:
        # The statement holds the manifest and two subjects: bounded by the frames alone.
        budget = MetadataBudget(head.file_count, frames=len(head.frames), format_version=2)
    else:
        # The statement holds the manifest and one subject per file: bounded by what its kit's members need.
        budget = MetadataBudget(len(head.files) + len(metadata.members), frames=len(head.frames))
    statement = Statement.from_bytes(
        envelope.payload, what=f"{MANIFEST_DSSE} payload", limits=budget.statement_limits()
    )
    if statement.predicate_type != MANIFEST_PREDICATE_TYPE:
        raise FormatError(
            f"{MANIFEST_DSSE}: predicateType {statement.predicate_type!r}, expected {MANIFEST_PREDICATE_TYPE}"
        )
    # metadata.manifest was parsed and schema-checked from the manifest.json bytes. When those bytes are the
    # pretty form of the predicate, the predicate is the same JSON value (the strict parser round-trips it), so
    # that Manifest is the signed one: parsed and validated once, compared once. Only on a mismatch is the
    # predicate parsed on its own, so a predicate that breaks the schema is still named as such.
    if metadata.members[MANIFEST_JSON] != jsonio.dump_pretty(statement.predicate):
        Manifest.from_json(statement.predicate, what=f"{MANIFEST_DSSE} predicate")
        raise IntegrityError(f"{MANIFEST_JSON}: differs from the signed predicate in {MANIFEST_DSSE}")
    sums_bytes = metadata.members[SHA256SUMS]
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in metadata.members.items()}
    if head.file_list is not None:
        # Format 2: the statement names the file list and SHA256SUMS; the manifest names the list by the same
        # digest. Then the list is read, bounded by the signed count, and checked against both (load_files),
        # so the bytes read have the digest fileList states.
        wanted = {FILE_LIST: head.file_list.sha256, SHA256SUMS: digests[SHA256SUMS]}
        digests[FILE_LIST] = head.file_list.sha256
        _check_subjects(statement, wanted, what=f"the {MANIFEST_JSON} fileList/{SHA256SUMS}")
        signed = load_files(metadata) if files else head
    else:
        signed = head
        sums = checksums.parse(sums_bytes)
        listed = {f.path: f.sha256 for f in signed.files}
        if len(listed) != len(signed.files):
            raise FormatError(f"{MANIFEST_JSON}: a file is listed twice")
        if sums != listed:
            differing = sorted(set(sums.items()) ^ set(listed.items()))
            raise IntegrityError(f"{SHA256SUMS}: differs from the signed manifest at {differing[0][0]}")
        wanted = dict(listed)
        wanted[SHA256SUMS] = digests[SHA256SUMS]
        _check_subjects(statement, wanted, what=f"the manifest/{SHA256SUMS}")
    if signed.sboms and not metadata.files_pending:
        listed_paths = {f.path for f in signed.files}
        for number, record in enumerate(signed.sboms):
            if record.path not in listed_paths:
                raise IntegrityError(f"{MANIFEST_JSON}: sboms[{number}].path {record.path!r} is not a file of the kit")
    # SHA256SUMS.sig is for stock tools and is made by the first build key only; the DSSE subjects already
    # bind SHA256SUMS. It must verify when that key is trusted here; otherwise it is reported unchecked.
    if isinstance(metadata, KitMetadata) and not metadata.files_pending:
        check_index_against(metadata.location.index, signed, digests)
    first_keyid = checksum_keyid(signed, envelope)
    checksum_signer: str | None = None
    if any(key.keyid == first_keyid for key in policy.keys):
        checksum_signer = verify_detached(
            metadata.members[SHA256SUMS_SIG], sums_bytes, policy=policy, what=SHA256SUMS_SIG
        )
    return signers, checksum_signer, signed


def _check_subjects(statement: Statement, wanted: Mapping[str, str], *, what: str) -> None:
    subjects = {s.name: s.sha256 for s in statement.subjects}
    if subjects != wanted or len(subjects) != len(statement.subjects):
        differing = sorted(set(subjects.items()) ^ set(wanted.items()))
        name = differing[0][0] if differing else "(duplicate subject)"
        raise IntegrityError(f"{MANIFEST_DSSE}: statement subject {name} does not match {what}")


def check_index_against(index: KitIndex, signed: Manifest, digests: Mapping[str, str]) -> None:
    """Format 2: the unsigned index says what the signed manifest says (ArchiveError where it does not).

    Its first frames are the manifest's payload frames, field for field; its payload members are the signed file
    list's (``load_files`` built them from it); its own entries are exactly the metadata members read (``digests``:
    name to the SHA-256 of the bytes read), each alone in its frames after the payload frames, with that digest.
    A format-1 manifest needs a format-1 index and the other way round.
    """
    if index.format_version != signed.format_version:
        raise ArchiveError(
            f"kit index is format {index.format_version}, the signed manifest is format {signed.format_version}"
        )
    if index.format_version != 2:
        return
    payload = len(signed.frames)
    if index.frames[:payload] != signed.frames:
        differing = next(
            (n for n, (a, b) in enumerate(zip(index.frames, signed.frames, strict=False)) if a != b), payload
        )
        raise ArchiveError(f"archive index frame {differing} differs from the signed manifest's frames")
    listed = index.members[len(signed.files) :]
    if len(listed) != len(digests):
        raise ArchiveError(f"kit index lists {len(listed)} metadata members, {len(digests)} were read: one twice")
    for member in listed:
        assert isinstance(member, MemberEntry)
        if member.path not in digests:
            raise IntegrityError(f"{member.path}: in the archive index but not a metadata member read")
        # Alone in its frames: one frame holding exactly it, or (a large one) a frame holding its header alone, the
        # following frames its padded data (check_tiling made sure those hold nothing else).
        first = index.frames[member.frame].size if member.frame < len(index.frames) else -1
        if member.frame < payload or member.at != 0 or first not in (layout.member_bytes(member.size), layout.BLOCK):
            raise ArchiveError(
                f"{member.path}: a metadata member must lie in frames of its own after the payload (one frame, or "
                "a header frame and its data frames)"
            )
        if member.sha256 != digests[member.path]:
            raise ArchiveError(f"{member.path}: archive index digest differs from the member read")
