"""Sealing a kit: its required metadata members (SHA256SUMS, its signature, the signed file list, manifest.json,
the DSSE envelope).

Shared by kit build, delta builds and the test factories that craft kits with kit's own writer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core import checksums, filelist
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_DSSE, MANIFEST_JSON, SHA256SUMS, SHA256SUMS_SIG, Manifest
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope


@dataclass(frozen=True)
class Sealed:
    sums_sha256: str
    manifest_sha256: str
    manifest: Manifest  # as sealed: with its fileList record

    @property
    def sums(self) -> bytes:
        """The SHA256SUMS bytes written, made again from the sealed files: not kept (~95 MB at a million files)."""
        return checksums.render_files(self.manifest.files)


def seal(writer: KitWriter2, manifest: Manifest, keys: list[PrivateKey]) -> Sealed:
    """Write the required metadata members (SHA256SUMS, its signature, manifest.files.jsonl, manifest, DSSE envelope).

    ``manifest`` is a format-2 manifest with its files; its ``fileList`` record is made here from the list written.
    The statement's subjects are the file list and SHA256SUMS (docs/format.md §0.8), not one per file.
    Optional metadata (attestations, a Sigstore bundle) may follow; the caller then calls ``writer.finish()``.
    """
    files = manifest.files
    sums = checksums.render_files(files)
    sums_entry = writer.add_metadata(SHA256SUMS, sums)
    # Ed25519 hashes the message twice, so the one signature over SHA256SUMS needs it whole, once: it is let go here,
    # before the file list is rendered, so the two never lie side by side.
    writer.add_metadata(SHA256SUMS_SIG, keys[0].sign(sums))
    del sums
    # The list is rendered twice, piece by piece (its size and digest first, for the header and fileList; then
    # into the frames): a list of a million files is never held whole.
    ref = filelist.describe(filelist.render_pieces(files), files)
    list_entry = writer.add_metadata_stream(FILE_LIST, ref.size, filelist.render_pieces(files))
    manifest = manifest.sealed_with(ref)
    manifest_bytes = manifest.to_bytes()
    writer.add_metadata(MANIFEST_JSON, manifest_bytes)
    statement = Statement(
        subjects=(
            Subject(name=FILE_LIST, sha256=list_entry.sha256),
            Subject(name=SHA256SUMS, sha256=sums_entry.sha256),
        ),
        predicate_type=MANIFEST_PREDICATE_TYPE,
        predicate=manifest.to_json(),
    )
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), keys)
    writer.add_metadata(MANIFEST_DSSE, envelope.to_bytes())
    return Sealed(
        sums_sha256=sums_entry.sha256,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        manifest=manifest,
    )
