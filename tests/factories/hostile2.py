"""Format-2 kits crafted with a defect in their frames table or member map (docs/format.md §0.3).

``crafted2`` writes a valid, signed format-2 kit with the real writer, then lets a case change what an
attacker controls: the signed ``files``/``frames`` before signing (a hostile signer: the index is then
made to agree), and the unsigned index after it (anyone). Each case is named after its defect.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kitbuilder.archive import zstdframes
from kitbuilder.archive.writer2 import KitWriter2
from kitbuilder.core.manifest import Component, FileEntry, FrameEntry, KitInfo, Manifest
from kitbuilder.ops.build import seal
from tests.factories.hostile import RELEASE, pseudo_random
from tests.factories.kits import TEST_BUILD, write_payload

SignedHook = Callable[[list[FileEntry], list[FrameEntry]], None]
IndexHook = Callable[[dict[str, Any]], None]


def small_files() -> list[tuple[str, bytes]]:
    """Three small files in one group frame, then a large one (header frame + two chunk frames)."""
    return [
        ("docs/a.md", b"# Runbook\n\nVerify, then apply.\n"),
        ("docs/b.sql", b"SELECT 1;\n" * 100),
        ("docs/c.txt", b"third\n" * 50),
        ("docs/z.bin", pseudo_random(5 << 20)),
    ]


@dataclass(frozen=True)
class Crafted2:
    data: bytes
    index: dict[str, Any]


def crafted2(
    files: list[tuple[str, bytes]] | None = None,
    *,
    signed_hook: SignedHook | None = None,
    index_hook: IndexHook | None = None,
    raw_hook: Callable[[bytearray, dict[str, Any]], None] | None = None,
) -> Crafted2:
    """A format-2 kit signed by RELEASE, changed by the hooks (signed parts first, then the index, then bytes)."""
    import io

    sink = io.BytesIO()
    writer = KitWriter2(sink, level=3)
    entries, frames = write_payload(writer, ((p, d, "doc", "docs") for p, d in files or small_files()))
    signed_files, signed_frames = list(entries), list(frames)
    if signed_hook is not None:
        signed_hook(signed_files, signed_frames)
    manifest = Manifest(
        kit=KitInfo("hostile-kit", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
        build=TEST_BUILD,
        components=(Component("docs", "doc"),),
        files=tuple(signed_files),
        frames=tuple(signed_frames),
        format_version=2,
    )
    seal(writer, manifest, [RELEASE])
    writer.finish()
    data = bytearray(sink.getvalue())
    index_offset = struct.unpack_from("<Q", data, len(data) - 8)[0]
    index = json.loads(bytes(data[index_offset + 8 : len(data) - zstdframes.FOOTER_SIZE]))
    if signed_hook is not None:
        # The hostile signer makes the index agree with what it signed.
        index["frames"][: len(frames)] = [f.to_json() for f in signed_frames]
        by_path = {f.path: f for f in signed_files}
        kept = []
        for member in index["members"]:
            item = by_path.get(member["path"])
            if item is None and member["frame"] < len(frames):
                continue  # the signer dropped it
            if item is not None:
                member.update(frame=item.frame, at=item.at, size=item.size, sha256=item.sha256)
            kept.append(member)
        index["members"] = kept
    if index_hook is not None:
        index_hook(index)
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    out = data[:index_offset]
    if raw_hook is not None:
        raw_hook(out, index)
    out += zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, body)
    out += zstdframes.footer_frame(len(out) - len(body) - 8)
    return Crafted2(bytes(out), index)


@dataclass(frozen=True)
class SignedFrame:
    """A payload frame a hostile signer writes: its compressed bytes, decompressed size, and the members its index
    entry lists in it (their headers' offsets in its decoded bytes)."""

    data: bytes
    size: int
    members: tuple[tuple[str, int, int, bytes], ...] = ()  # (path, at, size, content) as the signer lists them


def crafted_frames(frames: list[SignedFrame]) -> bytes:
    """A format-2 kit signed by RELEASE whose payload is exactly ``frames`` (appended verbatim, signed as they
    are): what a signer can make that the writer never would. The index agrees with what is signed."""
    import hashlib
    import io

    from kitbuilder.archive.writer2 import FrameMember

    sink = io.BytesIO()
    writer = KitWriter2(sink, level=3)
    for frame in frames:
        members = [FrameMember(p, at, n, hashlib.sha256(content).hexdigest()) for p, at, n, content in frame.members]
        writer.add_frame(frame.data, size=frame.size, sha256=hashlib.sha256(frame.data).hexdigest(), members=members)
    payload = writer.finish_payload()
    files = tuple(FileEntry(m.path, m.size, m.sha256, "doc", "docs", frame=m.frame, at=m.at) for m in payload.members)
    manifest = Manifest(
        kit=KitInfo("hostile-kit", "1.0.0", 1, "2099-01-01T00:00:00Z", "demo", "stable"),
        build=TEST_BUILD,
        components=(Component("docs", "doc"),),
        files=files,
        frames=payload.frames,
        format_version=2,
    )
    seal(writer, manifest, [RELEASE])
    writer.finish()
    return sink.getvalue()


def tar_member(path: str, content: bytes) -> bytes:
    """A member's tar bytes as format 2 writes them: header (mtime 0), content, zero padding."""
    from kitbuilder.archive import layout, tarfmt

    return tarfmt.build_header(path, len(content), 0) + content + bytes(layout.padded(len(content)) - len(content))
