"""Write the published test vectors: small valid and invalid kits with the verdict `kit verify` must give.

    python -m tests.vectors.generate            # rewrites tests/vectors/*.kit.tar.zst and vectors.json
    python -m tests.vectors.generate --check    # exits 1 if the committed files differ from a fresh build

Every invalid kit is validly signed by the `release` key unless its defect is the signature itself, so
what must refuse it is the rule it breaks (docs/format.md), not the signature. Each is named after its
defect. The verdicts are the documented ones (docs/exit-codes.md); where kitbuilder does not reach them
yet, tests/vectors/test_vectors.py marks the vector xfail with the bug. docs/test-vectors.md explains how
a second implementation uses them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitbuilder.archive import zstdframes
from tests.factories import hostile, hostile2
from tests.factories.filelist_kits import first_line
from tests.factories.hostile import OPS, RELEASE, STRANGER, Member, Recipe
from tests.factories.mutate import (
    BUNDLE,
    ENCODINGS,
    INSERTS,
    PROVENANCE,
    TarField,
    _replace_members,
    attested_kit,
    attested_members,
    dump,
    padded,
    resign_envelope,
)

HERE = Path(__file__).resolve().parent
KEYS = {"release": RELEASE, "ops": OPS, "stranger": STRANGER}


@dataclass(frozen=True)
class Vector:
    name: str
    make: Callable[[], bytes]
    exit_code: int
    kind: str | None  # the `kind` in "kit: <kind> error: ..."; None for a kit that passes
    defect: str
    trust: tuple[str, ...] = ("release",)
    product: str = "demo"
    extra: dict[str, Any] = field(default_factory=dict)
    kit_format: int = 1


# Format-1 vectors that were made by `kit build`, which now writes format 2: their committed files are kept as
# they are (format 1 is read only) and the same makers give the format-2 vectors named "format2-...".
FROZEN_FORMAT1 = {
    "valid-built-with-provenance-and-bundle",
    "attestation-subject-digest-wrong",
    "attestation-untrusted-key",
    "attestation-predicate-type-other",
    "bundle-digest-of-other-file",
}


# ---------------------------------------------------------------------------------------------------------------
# the small kits the vectors are made from


def members() -> list[Member]:
    return [Member("docs/a.md", b"# Runbook\n\nVerify, then apply.\n"), Member("docs/b.sql", b"SELECT 1;\n" * 100)]


def kit(*extra: Member, **recipe: Any) -> bytes:
    return Recipe(members=[*members(), *extra], **recipe).build().data


def with_member(path: str, change: Callable[[Member], None], **recipe: Any) -> bytes:
    listed = members()
    change(next(m for m in listed if m.path == path))
    return Recipe(members=listed, **recipe).build().data


def data_encoding(name: str, path: str = "docs/b.sql") -> bytes:
    def change(member: Member) -> None:
        member.data_frame = ENCODINGS[name](padded(member.data))

    return with_member(path, change)


def header_field(field_name: str, value: bytes = b"", **options: Any) -> bytes:
    def change(member: Member) -> None:
        member.header = TarField(member.path, field_name, value, **options).header(member.data)

    return with_member("docs/b.sql", change)


def header(**fields: Any) -> bytes:
    return kit(hostile.with_header("docs/x.md", b"x", **fields))


def index_hook(change: Callable[[dict[str, Any]], None]) -> bytes:
    return kit(index_hook=change)


def kit_field(**values: Any) -> bytes:
    return kit(kit=values)


def predicate(change: Callable[[dict[str, Any]], None]) -> bytes:
    """The manifest edited by a hostile signer, after which SHA256SUMS, the statement and signature follow."""
    return kit(manifest_hook=change)


def statement_bytes(change: Callable[[dict[str, Any]], None]) -> bytes:
    """The signed statement edited as JSON (values kit's writer cannot produce), re-signed by release."""
    state: dict[str, bytes] = {}

    def payload(raw: bytes) -> bytes:
        statement = json.loads(raw)
        change(statement)
        state["payload"] = dump(statement, pretty=False)
        state["predicate"] = dump(statement["predicate"], pretty=True)
        return state["payload"]

    return kit(
        payload_hook=payload,
        envelope_hook=lambda envelope: resign_envelope(envelope, state["payload"]),
        manifest_json_hook=lambda _: state["predicate"],
    )


def set_kit_value(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda statement: statement["predicate"]["kit"].update({key: value})


def migration_options(options: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Make docs/b.sql the `up` script of a migration component with ``options``."""

    def change(manifest: dict[str, Any]) -> None:
        manifest["components"].append({"id": "m1", "role": "migration", "phase": "21-101", "options": options})
        for entry in manifest["files"]:
            if entry["path"] == "docs/b.sql":
                entry.update(role="migration", component="m1")

    return change


def attested(change: Callable[[dict[str, Any]], None]) -> bytes:
    """The provenance statement of a `kit build` kit, edited and re-signed by release."""
    envelope = json.loads(attested_members()[PROVENANCE])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement)
    resign_envelope(envelope, dump(statement, pretty=False))
    return _replace_members(attested_kit(), {PROVENANCE: dump(envelope, pretty=True)})


def attested_signed_by(key: Any) -> bytes:
    envelope = json.loads(attested_members()[PROVENANCE])
    resign_envelope(envelope, base64.b64decode(envelope["payload"]), signers=(key,))
    return _replace_members(attested_kit(), {PROVENANCE: dump(envelope, pretty=True)})


def bundle(change: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(attested_members()[BUNDLE])
    change(document)
    return _replace_members(attested_kit(), {BUNDLE: dump(document, pretty=True)})


def replace_payload_after_signing(raw: bytes) -> bytes:
    return raw.replace(b'"sequence":1', b'"sequence":2')


def change_sums_after_signing(member: Member) -> None:
    if member.path == "SHA256SUMS":
        member.data = (b"f" if member.data[:1] != b"f" else b"e") + member.data[1:]


def flip_frame_checksum(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def set_index_member(path: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda index: hostile.index_entry(index, path).update({key: value})


def duplicate_index_entry(index: dict[str, Any]) -> None:
    index["members"].append(dict(index["members"][0]))


def end_only(size: int) -> bytes:
    return kit(end_frame=hostile.zframe(bytes(size)))


def envelope_without_signatures(envelope: dict[str, Any]) -> None:
    envelope["signatures"] = []


def hidden_in_empty_member() -> bytes:
    evil = b"#!/bin/sh\necho pwned\n"
    hidden = hostile.ustar_header("docs/evil.sh", len(evil), mode=0o755) + padded(evil)
    return kit(Member("docs/x.md", b"", data_frame=ENCODINGS["raw-blocks-fcs0"](hidden)))


def symlink_member() -> bytes:
    return header(typeflag=b"2", linkname=b"/etc/passwd")


# ---------------------------------------------------------------------------------------------------------------
# the vectors

VECTORS: tuple[Vector, ...] = (
    # --- valid kits ---
    Vector("valid-minimal", kit, 0, None, "none: two small files, every frame as kit build writes it"),
    Vector(
        "valid-raw-blocks-frame",
        lambda: data_encoding("raw-blocks"),
        0,
        None,
        "none: a data frame of raw blocks with an 8-byte content size, as kit build writes incompressible data",
    ),
    Vector(
        "valid-frame-without-checksum",
        lambda: data_encoding("no-checksum"),
        0,
        None,
        "none: a data frame without the optional XXH64 content checksum",
    ),
    Vector(
        "valid-two-signers-threshold-1",
        lambda: kit(signers=(RELEASE, STRANGER)),
        0,
        None,
        "none: signed by the trusted key and by an untrusted one; the threshold of 1 is met",
    ),
    Vector(
        "valid-built-with-provenance-and-bundle",
        attested_kit,
        0,
        None,
        "none: what `kit build --sigstore-bundle` writes (kit SBOM, SLSA provenance, Sigstore key bundle)",
    ),
    # --- zstd frames (docs/format.md §1.1, §1.5) ---
    Vector(
        "frame-fcs0-raw-block",
        hidden_in_empty_member,
        5,
        "archive",
        "docs/x.md is signed empty; its data frame declares Frame_Content_Size 0 but holds a raw block with a "
        "whole tar member (docs/evil.sh), which `zstd -dc | tar -x` extracts",
    ),
    Vector(
        "frame-fcs0-raw-block-signed-size",
        lambda: data_encoding("raw-blocks-fcs0"),
        5,
        "archive",
        "a data frame declares Frame_Content_Size 0 but holds a raw block of the signed content",
    ),
    Vector(
        "frame-content-size-one-short",
        lambda: data_encoding("raw-blocks-fcs-short"),
        5,
        "archive",
        "a data frame declares one byte less than its blocks hold",
    ),
    Vector(
        "frame-content-checksum-wrong",
        lambda: data_encoding("raw-blocks-wrong-checksum"),
        5,
        "archive",
        "a data frame's XXH64 content checksum does not match its content",
    ),
    Vector(
        "frame-compressed-checksum-flipped",
        lambda: with_member(
            "docs/b.sql", lambda m: setattr(m, "data_frame", flip_frame_checksum(hostile.zframe(padded(m.data))))
        ),
        5,
        "archive",
        "the last byte of a compressed data frame's checksum flipped (frame digest re-signed)",
    ),
    Vector(
        "frame-last-block-missing",
        lambda: data_encoding("no-last-block"),
        5,
        "archive",
        "a data frame whose blocks never set Last_Block (the frame runs into the next member)",
    ),
    Vector(
        "frame-window-1gib",
        lambda: data_encoding("raw-blocks-window-1g"),
        5,
        "archive",
        "a data frame asks for a 1 GiB window",
    ),
    Vector(
        "frame-dictionary-id",
        lambda: data_encoding("raw-blocks-dictionary"),
        5,
        "archive",
        "a data frame needs dictionary 1",
    ),
    Vector(
        "frame-reserved-bit",
        lambda: data_encoding("raw-blocks-reserved-bit"),
        5,
        "archive",
        "a frame header sets the reserved bit",
    ),
    Vector(
        "frame-reserved-block-type",
        lambda: data_encoding("reserved-block-type"),
        5,
        "archive",
        "a block of the reserved Block_Type 3",
    ),
    Vector(
        "frame-member-in-two-frames",
        lambda: data_encoding("two-frames"),
        4,
        "integrity",
        "a member's data is split over two zstd frames (a member is exactly two frames)",
    ),
    Vector(
        "frame-skippable-between-members",
        lambda: with_member("docs/b.sql", lambda m: setattr(m, "before", INSERTS[0])),
        5,
        "archive",
        "an empty skippable frame between two members (none may come before the index)",
    ),
    Vector(
        "frame-header-raw-block-fcs0",
        lambda: with_member(
            "docs/b.sql",
            lambda m: setattr(
                m, "header_frame", ENCODINGS["raw-blocks-fcs0"](hostile.ustar_header(m.path, len(m.data)))
            ),
        ),
        5,
        "archive",
        "a header frame declares Frame_Content_Size 0 but holds the 512-byte header in a raw block",
    ),
    Vector(
        "end-of-archive-missing",
        lambda: kit(end_frame=b"", index_hook=lambda i: i["end"].update(length=1)),
        5,
        "archive",
        "no end-of-archive frame before the index",
    ),
    Vector("end-of-archive-512-bytes", lambda: end_only(512), 5, "archive", "the end-of-archive frame holds one block"),
    Vector(
        "end-of-archive-nonzero",
        lambda: kit(end_frame=hostile.zframe(b"\1" * 1024)),
        5,
        "archive",
        "the end-of-archive frame holds 1024 bytes that are not zero",
    ),
    Vector(
        "trailing-bytes-after-footer",
        lambda: kit(trailer=b"\0" * 16),
        5,
        "archive",
        "16 bytes after the footer",
    ),
    Vector(
        "footer-offset-off-by-one",
        lambda: kit(footer_hook=lambda offset: zstdframes.footer_frame(offset + 1)),
        5,
        "archive",
        "the footer points one byte past the index frame",
    ),
    Vector(
        "index-not-json",
        lambda: kit(index_bytes_hook=lambda raw: raw[:-1]),
        5,
        "format",
        "the index JSON is cut by one byte",
    ),
    Vector(
        "index-member-listed-twice",
        lambda: index_hook(duplicate_index_entry),
        5,
        "archive",
        "the index lists a member twice",
    ),
    Vector(
        "index-size-differs-from-manifest",
        lambda: index_hook(set_index_member("docs/a.md", "size", 30)),
        5,
        "archive",
        "the index gives a payload size the signed manifest does not",
    ),
    Vector(
        "index-metadata-digest-wrong",
        lambda: index_hook(set_index_member("manifest.json", "sha256", "0" * 64)),
        4,
        "integrity",
        "the (unsigned) index entry of manifest.json gives a wrong SHA-256",
    ),
    # --- tar headers (docs/format.md §2, §2.1) ---
    Vector(
        "tar-size-trailing-newline",
        lambda: header_field("size", spelling=1),
        5,
        "archive",
        "the size field is 11 octal digits and a newline instead of a NUL",
    ),
    Vector(
        "tar-size-leading-nul",
        lambda: header_field("size", spelling=6),
        5,
        "archive",
        "the size field starts with a NUL (0 to one reader, the digits to GNU tar)",
    ),
    Vector(
        "tar-size-base256",
        lambda: header_field("size", spelling=11),
        5,
        "archive",
        "the size field uses base-256",
    ),
    Vector(
        "tar-uid-blanks",
        lambda: header_field("uid", spelling=8),
        5,
        "archive",
        "the uid field is all spaces (GNU tar: 'Blanks in header where numeric uid_t value expected')",
    ),
    Vector(
        "tar-mtime-trailing-newline",
        lambda: header_field("mtime", spelling=1),
        5,
        "archive",
        "the mtime field ends in a newline",
    ),
    Vector(
        "tar-checksum-wrong",
        lambda: header_field("chksum", b"0000000\0"),
        5,
        "archive",
        "the header checksum does not match the header",
    ),
    Vector("tar-symlink", symlink_member, 5, "archive", "a member of type symbolic link"),
    Vector(
        "tar-hardlink",
        lambda: header(typeflag=b"1", linkname=b"docs/a.md"),
        5,
        "archive",
        "a member of type hard link",
    ),
    Vector(
        "tar-pax-header",
        lambda: kit(
            hostile.with_header("docs/PaxHeaders/x.md", hostile.pax_records({"path": "../../etc/x"}), typeflag=b"x"),
            Member("docs/x.md", b"x"),
        ),
        5,
        "archive",
        "a PAX extended header that would rename the next member",
    ),
    Vector(
        "tar-gnu-longname",
        lambda: kit(
            hostile.with_header(
                "docs/long", hostile.gnu_longname("../" * 10 + "x"), name="././@LongLink", typeflag=b"L"
            ),
            Member("docs/x.md", b"x"),
        ),
        5,
        "archive",
        "a GNU long-name header",
    ),
    Vector("tar-gnu-magic", lambda: header(magic=b"ustar  \0"), 5, "archive", "GNU magic instead of POSIX ustar"),
    Vector(
        "tar-path-dotdot",
        lambda: header(name="docs/../../etc/passwd"),
        5,
        "archive",
        "a header path with '..' components",
    ),
    Vector("tar-path-absolute", lambda: header(name="/etc/cron.d/x"), 5, "archive", "an absolute header path"),
    Vector("tar-mode-setuid", lambda: header(mode=0o4755), 5, "archive", "mode 4755"),
    Vector(
        "tar-duplicate-name",
        lambda: kit(
            Member("docs/x.md", b"one"), Member("docs/y.md", b"two", header=hostile.ustar_header("docs/x.md", 3))
        ),
        5,
        "archive",
        "two members with the same header path",
    ),
    Vector(
        "tar-case-collision",
        lambda: kit(Member("docs/x.md", b"one"), Member("docs/X.md", b"two")),
        5,
        "archive",
        "two members whose paths differ only in case",
    ),
    # --- signatures and signed documents ---
    Vector(
        "signature-untrusted-key",
        lambda: kit(signers=(STRANGER,)),
        3,
        "trust",
        "manifest.dsse.json and SHA256SUMS.sig signed by a key the verifier does not trust",
    ),
    Vector(
        "signature-over-other-payload",
        lambda: kit(payload_hook=replace_payload_after_signing),
        3,
        "trust",
        "the statement was changed after it was signed",
    ),
    Vector(
        "signature-threshold-not-met",
        kit,
        3,
        "trust",
        "signed by release only, verified with --key release --key ops (threshold 2)",
        trust=("release", "ops"),
    ),
    Vector(
        "envelope-without-signatures",
        lambda: kit(envelope_hook=envelope_without_signatures),
        5,
        "format",
        "manifest.dsse.json has an empty signature list",
    ),
    Vector(
        "manifest-json-differs-from-signed",
        lambda: kit(manifest_json_hook=lambda raw: raw.replace(b"1.0.0", b"1.0.1")),
        4,
        "integrity",
        "manifest.json is not the signed predicate",
    ),
    Vector(
        "sha256sums-changed-after-signing",
        lambda: kit(metadata_hook=change_sums_after_signing),
        4,
        "integrity",
        "SHA256SUMS differs from what the statement signs",
    ),
    Vector(
        "payload-content-changed",
        lambda: with_member("docs/a.md", lambda m: m.signed.update(sha256="0" * 64)),
        4,
        "integrity",
        "docs/a.md's content is not what the signed manifest says",
    ),
    Vector(
        "member-not-in-manifest",
        lambda: kit(Member("docs/extra.md", b"unlisted", listed=False)),
        4,
        "integrity",
        "a member in the archive and index that the signed manifest does not list",
    ),
    Vector("kit-expired", lambda: kit_field(expires="2000-01-01T00:00:00Z"), 6, "policy", "the kit expired in 2000"),
    Vector(
        "kit-wrong-product", kit, 6, "policy", "the kit is for product demo, the host expects other", product="other"
    ),
    Vector(
        "manifest-version-lone-surrogate",
        lambda: statement_bytes(set_kit_value("version", "\ud800")),
        5,
        "format",
        "the signed kit.version holds a lone UTF-16 surrogate (\\ud800)",
    ),
    Vector(
        "manifest-expires-february-30",
        lambda: statement_bytes(set_kit_value("expires", "2099-02-30T00:00:00Z")),
        5,
        "format",
        "the signed kit.expires is 2099-02-30",
    ),
    Vector(
        "manifest-expires-leap-second",
        lambda: statement_bytes(set_kit_value("expires", "2099-12-31T23:59:60Z")),
        5,
        "format",
        "the signed kit.expires is 23:59:60",
    ),
    Vector(
        "manifest-migration-up-is-a-list",
        lambda: predicate(migration_options({"up": ["b.sql"], "transactional": True})),
        5,
        "format",
        "a signed migration component whose `up` option is a list (kit apply reads a file name)",
    ),
    Vector(
        "manifest-sequence-2-pow-63",
        lambda: kit_field(sequence=2**63),
        5,
        "format",
        "the signed kit.sequence is 2^63 (beyond a signed 64-bit integer)",
    ),
    # --- attestations and the Sigstore bundle (kit build output, re-signed) ---
    Vector(
        "attestation-subject-digest-wrong",
        lambda: attested(lambda s: s["subject"][0]["digest"].update(sha256="0" * 64)),
        4,
        "integrity",
        "the provenance names manifest.json with another digest",
    ),
    Vector(
        "attestation-untrusted-key",
        lambda: attested_signed_by(STRANGER),
        3,
        "trust",
        "the provenance is signed by a key the verifier does not trust",
    ),
    Vector(
        "attestation-predicate-type-other",
        lambda: attested(lambda s: s.update(predicateType="https://example.com/other/v1")),
        5,
        "format",
        "attestations/provenance.dsse.json holds another predicate type",
    ),
    Vector(
        "bundle-digest-of-other-file",
        lambda: bundle(
            lambda b: b["messageSignature"]["messageDigest"].update(digest=base64.b64encode(bytes(32)).decode())
        ),
        4,
        "integrity",
        "the Sigstore bundle's message digest is not SHA256SUMS's",
    ),
)


def _v2_files() -> list[tuple[str, bytes]]:
    """Small files in several groups and one large compressible file (header frame, then a chunk frame)."""
    files = [(f"docs/n{n:03d}.md", (f"note {n}\n" * (n * 97 % 4000)).encode()) for n in range(60)]
    files.append(("docs/zz-large.txt", b"compressible line\n" * 70_000))
    return files


def _v2(**hooks: Any) -> Callable[[], bytes]:
    return lambda: hostile2.crafted2(_v2_files(), **hooks).data


def _v2_index(change: Callable[[dict[str, Any]], None]) -> Callable[[], bytes]:
    return _v2(index_hook=change)


def _v2_signed_member(path: str, **changes: int) -> Callable[[], bytes]:
    import dataclasses

    def change(files: list[Any], frames: list[Any]) -> None:
        number = next(n for n, f in enumerate(files) if f.path == path)
        files[number] = dataclasses.replace(
            files[number], **{k: getattr(files[number], k) + v for k, v in changes.items()}
        )

    return _v2(signed_hook=change)


def _v2_signed_frame(number: int, **values: Any) -> Callable[[], bytes]:
    import dataclasses

    def change(files: list[Any], frames: list[Any]) -> None:
        frames[number] = dataclasses.replace(frames[number], **values)

    return _v2(signed_hook=change)


def _v2_payload_in_index(index: dict[str, Any]) -> None:
    index["members"].insert(0, {"at": 0, "frame": 0, "path": "docs/n000.md", "sha256": "0" * 64, "size": 0})


def _v2_list(**hooks: Any) -> Callable[[], bytes]:
    from tests.factories.filelist_kits import crafted_list

    return lambda: crafted_list(files=_v2_files(), **hooks)


def _v2_swap_list_digit(members: dict[str, bytes]) -> None:
    data = members["manifest.files.jsonl"]
    at = data.index(b'"sha256":"') + len(b'"sha256":"')
    members["manifest.files.jsonl"] = data[:at] + (b"0" if data[at : at + 1] != b"0" else b"1") + data[at + 1 :]


def _v2_move_a_file_to_another_component(manifest: dict[str, Any]) -> None:
    """Signed totals that add up (to fileList) but give one file of ``docs`` to a component no line names."""
    docs = manifest["components"][0]
    docs["files"] -= 1
    docs["bytes"] -= 6
    docs["byRole"]["doc"] = {"files": docs["files"], "bytes": docs["bytes"]}
    manifest["components"].append(
        {"id": "notes", "role": "doc", "files": 1, "bytes": 6, "byRole": {"doc": {"files": 1, "bytes": 6}}}
    )


def _v2_shift(number: int, by: int) -> Callable[[dict[str, Any]], None]:
    def change(index: dict[str, Any]) -> None:
        index["frames"][number]["offset"] += by

    return change


FORMAT2_VECTORS: tuple[Vector, ...] = (
    Vector("format2-valid", _v2(), 0, None, "none: a format-2 kit (groups, a chunked large file)", kit_format=2),
    Vector(
        "format2-valid-built-with-provenance-and-bundle",
        attested_kit,
        0,
        None,
        "none: what `kit build --sigstore-bundle` writes in format 2",
        kit_format=2,
    ),
    Vector(
        "format2-frames-gapped",
        _v2_index(_v2_shift(1, 1)),
        5,
        "archive",
        "index frame 1 starts one byte after frame 0 ends (frames do not tile the file)",
        kit_format=2,
    ),
    Vector(
        "format2-frames-overlapping",
        _v2_index(_v2_shift(1, -1)),
        5,
        "archive",
        "index frame 1 starts one byte before frame 0 ends",
        kit_format=2,
    ),
    Vector(
        "format2-member-at-off-by-512",
        _v2_signed_member("docs/n005.md", at=512),
        5,
        "archive",
        "the signed map puts a member's header 512 bytes after where the one before it ends",
        kit_format=2,
    ),
    Vector(
        "format2-index-lists-a-payload-member",
        _v2_index(_v2_payload_in_index),
        5,
        "archive",
        "the unsigned index lists a payload file (format-2 indexes list metadata members only)",
        kit_format=2,
    ),
    Vector(
        "format2-frame-sha256-lie-signed",
        _v2_signed_frame(0, sha256="0" * 64),
        4,
        "integrity",
        "the signed frames table gives frame 0 a digest its bytes do not have",
        kit_format=2,
    ),
    Vector(
        "format2-frame-size-lie-signed",
        _v2_signed_frame(0, size=1 << 20),
        5,
        "archive",
        "the signed frames table gives frame 0 another decompressed size",
        kit_format=2,
    ),
    Vector(
        "format2-frame-sha256-lie-index-only",
        _v2_index(lambda i: i["frames"][0].update(sha256="0" * 64)),
        5,
        "archive",
        "the unsigned index gives frame 0 another digest than the signed manifest",
        kit_format=2,
    ),
    Vector(
        "format2-group-member-not-in-index",
        _v2(signed_hook=lambda files, frames: files.pop(3)),
        5,
        "archive",
        "the signed file list leaves out a member of a group frame (the next entry is not where it ends)",
        kit_format=2,
    ),
    Vector(
        "format2-file-list-line-not-canonical",
        _v2_list(list_hook=first_line(lambda line: line.replace(b",", b", ", 1))),
        5,
        "format",
        "a line of the signed file list has a space after a comma (not its one byte form)",
        kit_format=2,
    ),
    Vector(
        "format2-file-list-count-lies",
        _v2_list(ref_hook=lambda ref: ref.update(count=ref["count"] + 1)),
        5,
        "format",
        "manifest.json fileList.count is one more than the lines of the signed file list",
        kit_format=2,
    ),
    Vector(
        "format2-file-list-changed-after-signing",
        _v2_list(after_signing=_v2_swap_list_digit),
        4,
        "integrity",
        "one digit of manifest.files.jsonl changed after signing (same size, other digest)",
        kit_format=2,
    ),
    Vector(
        "format2-sha256sums-differs-from-file-list",
        _v2_list(sums_hook=lambda sums: (b"0" if sums[:1] != b"0" else b"1") + sums[1:]),
        4,
        "integrity",
        "the signed SHA256SUMS gives the first file another digest than the signed file list",
        kit_format=2,
    ),
    Vector(
        "format2-component-totals-disagree-with-file-list",
        _v2_list(manifest_hook=_v2_move_a_file_to_another_component),
        4,
        "integrity",
        "the signed components' totals add up to fileList but give component docs one file fewer than the signed "
        "file list names",
        kit_format=2,
    ),
    Vector(
        "format2-components-without-totals",
        _v2_list(
            manifest_hook=lambda manifest: [
                component.pop(name) for component in manifest["components"] for name in ("files", "bytes", "byRole")
            ]
        ),
        5,
        "format",
        "format-2 components that state no payload totals: a kit of the development build of format 2",
        kit_format=2,
    ),
    Vector(
        "format2-manifest-lists-files-inline",
        _v2_list(manifest_hook=lambda manifest: manifest.update(files=[])),
        5,
        "format",
        "a format-2 manifest with a files array: a kit of the development build of format 2",
        kit_format=2,
    ),
)
VECTORS = VECTORS + FORMAT2_VECTORS


def key_document() -> dict[str, Any]:
    return {
        label: {"keyid": key.keyid, "publicKeyPem": key.public.to_pem().decode("ascii")} for label, key in KEYS.items()
    }


def render() -> dict[str, bytes]:
    """Every file of tests/vectors/ that this script owns, by name."""
    files: dict[str, bytes] = {}
    entries = []
    for vector in VECTORS:
        file = f"{vector.name}.kit.tar.zst"
        data = (HERE / file).read_bytes() if vector.name in FROZEN_FORMAT1 else vector.make()
        files[file] = data
        entries.append(
            {
                "name": vector.name,
                "file": file,
                "sha256": hashlib.sha256(data).hexdigest(),
                "defect": vector.defect,
                "trust": {"keys": list(vector.trust), "threshold": len(vector.trust)},
                "policy": {"product": vector.product},
                "expect": {"exitCode": vector.exit_code, "kind": vector.kind},
                "kitFormat": vector.kit_format,
            }
        )
    document = {
        "format": "kitbuilder-test-vectors/v1",
        "description": "Small kits with the verdict `kit verify` gives; see docs/test-vectors.md.",
        "verify": "kit verify FILE --key KEY.pub [--key ...] --product PRODUCT, empty anti-rollback state",
        "keys": key_document(),
        "vectors": entries,
    }
    files["vectors.json"] = json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    options = parser.parse_args()
    files = render()
    if options.check:
        stale = [n for n, d in files.items() if not (HERE / n).exists() or (HERE / n).read_bytes() != d]
        for name in stale:
            print(f"differs: tests/vectors/{name}", file=sys.stderr)
        return 1 if stale else 0
    for old in HERE.glob("*.kit.tar.zst"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files, {total} bytes, to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
