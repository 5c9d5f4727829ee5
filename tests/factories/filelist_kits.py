"""Format-2 kits whose signed file list (manifest.files.jsonl, docs/format.md §0.7) or its record lies.

``crafted_list`` writes a kit with the real writer and seals it by hand, so a case can change each signed part
before signing (a hostile signer: ``list_hook``, ``ref_hook``, ``manifest_hook``, ``sums_hook``,
``subjects_hook``) or a member after signing (anyone: ``after_signing``). Each case is named after its defect.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import zstandard

from kitbuilder.archive import layout, tarfmt, zstdframes
from kitbuilder.archive.framejobs import compress_frame
from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core import checksums, filelist, jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    SHA256SUMS,
    SHA256SUMS_SIG,
    Component,
    KitInfo,
    Manifest,
)
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.trust.signatures import sign_envelope
from tests.factories.hostile import RELEASE
from tests.factories.hostile2 import small_files
from tests.factories.kits import TEST_BUILD, write_payload

Bytes = Callable[[bytes], bytes]
# The data frame size of a large metadata member (the writer's ``metadata_chunk``): tests set a small one so that a
# list of a few files spans many frames (docs/format.md §0.2 writes CHUNK; readers accept any split that tiles).
METADATA_CHUNK = layout.CHUNK


def crafted_list(
    *,
    files: list[tuple[str, bytes]] | None = None,
    list_hook: Bytes | None = None,
    ref_hook: Callable[[dict[str, Any]], None] | None = None,
    manifest_hook: Callable[[dict[str, Any]], None] | None = None,
    sums_hook: Bytes | None = None,
    subjects_hook: Callable[[list[Subject]], list[Subject]] | None = None,
    after_signing: Callable[[dict[str, bytes]], None] | None = None,
) -> bytes:
    """A format-2 kit signed by RELEASE, its metadata changed by the hooks (signed parts, then members)."""
    sink = io.BytesIO()
    writer = KitWriter2(sink, level=3, metadata_chunk=METADATA_CHUNK)
    entries, frames = write_payload(writer, ((p, d, "doc", "docs") for p, d in files or small_files()))
    sums = checksums.render((f.path, f.sha256) for f in entries)
    if sums_hook is not None:
        sums = sums_hook(sums)
    # Each entry's line as it is, not through ``filelist.render``: a hostile signer is not held to what the writer
    # refuses to list (for a valid list the bytes are the same).
    listed = b"".join(entry.line().encode() for entry in entries)
    ref = filelist.describe(listed, entries).to_json()
    if list_hook is not None:
        listed = list_hook(listed)
        ref.update(size=len(listed), sha256=hashlib.sha256(listed).hexdigest())
    if ref_hook is not None:
        ref_hook(ref)
    manifest = (
        Manifest(
            kit=KitInfo("hostile-kit", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
            build=TEST_BUILD,
            components=(Component("docs", "doc"),),
            files=entries,
            frames=frames,
            format_version=2,
        )
        .sealed_with(filelist.FileListRef.from_json(ref))
        .to_json()
    )
    # The one component's totals say what the (hooked) fileList says, so a list that lies to its record is refused
    # by the rule about that record, not by the totals adding up to something else.
    docs = manifest["components"][0]
    docs.update(files=ref["count"], bytes=ref["payloadBytes"])
    docs["byRole"] = {"doc": {"files": ref["count"], "bytes": ref["payloadBytes"]}} if ref["count"] else {}
    if manifest_hook is not None:
        manifest_hook(manifest)
    subjects = [
        Subject(FILE_LIST, hashlib.sha256(listed).hexdigest()),
        Subject(SHA256SUMS, hashlib.sha256(sums).hexdigest()),
    ]
    if subjects_hook is not None:
        subjects = subjects_hook(subjects)
    statement = Statement(tuple(subjects), MANIFEST_PREDICATE_TYPE, manifest)
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), [RELEASE])
    members = {
        SHA256SUMS: sums,
        SHA256SUMS_SIG: RELEASE.sign(sums),
        FILE_LIST: listed,
        MANIFEST_JSON: jsonio.dump_pretty(manifest),
        MANIFEST_DSSE: envelope.to_bytes(),
    }
    if after_signing is not None:
        after_signing(members)
    for name, data in members.items():
        writer.add_metadata(name, data)
    writer.finish()
    return sink.getvalue()


def lines(change: Callable[[list[bytes]], list[bytes]]) -> Bytes:
    """A list hook changing the lines (each without its newline)."""

    def hook(data: bytes) -> bytes:
        return b"".join(line + b"\n" for line in change(data.split(b"\n")[:-1]))

    return hook


def first_line(change: Callable[[bytes], bytes]) -> Bytes:
    return lines(lambda items: [change(items[0]), *items[1:]])


def _index_of(kit: bytes) -> tuple[int, dict[str, Any]]:
    offset = int.from_bytes(kit[-8:], "little")
    return offset, json.loads(kit[offset + 8 : len(kit) - zstdframes.FOOTER_SIZE])


def _with_frames(kit: bytes, index: dict[str, Any], frames: list[tuple[bytes, int]]) -> bytes:
    """``kit`` rewritten as ``frames`` (compressed bytes, decompressed size) and ``index`` (its frame table made
    anew from them): what anyone can do to the unsigned layout of the metadata."""
    body = bytearray()
    index["frames"] = []
    for data, size in frames:
        digest = hashlib.sha256(data).hexdigest()
        index["frames"].append({"length": len(data), "offset": len(body), "sha256": digest, "size": size})
        body += data
    encoded = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    return (
        bytes(body) + zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, encoded) + zstdframes.footer_frame(len(body))
    )


def extra_metadata_member(kit: bytes, before: str, path: str, content: bytes) -> bytes:
    """``kit`` with one more metadata member ``path`` (one frame, listed in the index) just before member
    ``before``: e.g. a second manifest.json, which ``tar -x`` extracts first and then overwrites."""
    _, index = _index_of(kit)
    members = index["members"]
    place = next(n for n, m in enumerate(members) if m["path"] == before)
    number = members[place]["frame"]
    raw = tarfmt.build_header(path, len(content), 0) + content + bytes(layout.padded(len(content)) - len(content))
    frames = [(kit[f["offset"] : f["offset"] + f["length"]], f["size"]) for f in index["frames"]]
    frames.insert(number, (compress_frame(raw, 3), len(raw)))
    for member in members[place:]:
        member["frame"] += 1
    digest = hashlib.sha256(content).hexdigest()
    members.insert(place, {"at": 0, "frame": number, "path": path, "sha256": digest, "size": len(content)})
    index["end"] += 1
    return _with_frames(kit, index, frames)


def shared_metadata_frame(kit: bytes, name: str) -> bytes:
    """``kit`` with metadata member ``name`` (one frame) and the member after it in one frame: the members still tile
    the stream (``tar -x`` extracts the same files), but neither lies in frames of its own."""
    _, index = _index_of(kit)
    members = index["members"]
    place = next(n for n, m in enumerate(members) if m["path"] == name)
    number = members[place]["frame"]
    if members[place + 1]["frame"] != number + 1:
        raise ValueError(f"{name} is not one frame followed by the next member")
    listed = index["frames"]
    frames = [(kit[f["offset"] : f["offset"] + f["length"]], f["size"]) for f in listed]
    raw = b"".join(zstandard.ZstdDecompressor().decompress(frames[n][0]) for n in (number, number + 1))
    frames[number : number + 2] = [(compress_frame(raw, 3), len(raw))]
    members[place + 1].update(frame=number, at=listed[number]["size"])
    for member in members[place + 2 :]:
        member["frame"] -= 1
    index["end"] -= 1
    return _with_frames(kit, index, frames)
