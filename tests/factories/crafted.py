"""Crafted kits for the hostile-kit suite: any member bytes, validly signed unless the case says otherwise.

Most hostile kits here are *correctly signed by the trusted test key*, so what
rejects them is the rule under test (member safety, stream/index consistency,
integrity), not the signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.core import checksums, jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.manifest import METADATA_FILES
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope

_COMPRESSOR = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)


def header(
    path: str,
    size: int,
    *,
    typeflag: bytes = b"0",
    mode: int = 0o644,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    fix_checksum: bool = True,
) -> bytes:
    """A ustar header with any field set; by default a valid regular file."""
    block = bytearray(tarfmt.build_header("placeholder", size, 0))
    raw = path.encode("utf-8")
    block[0:100] = raw[:100].ljust(100, b"\0")
    block[345:500] = raw[100:255].ljust(155, b"\0") if len(raw) > 100 else bytes(155)
    block[100:108] = f"{mode:07o}".encode() + b"\0"
    block[156:157] = typeflag
    block[157:257] = linkname.ljust(100, b"\0")
    block[257:265] = magic
    if fix_checksum:
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


@dataclass
class Member:
    path: str
    data: bytes
    raw_header: bytes | None = None  # overrides the header built from path/size
    listed: bool = True  # in the signed manifest
    in_index: bool = True
    data_frame: bytes | None = None  # overrides the compressed data frame
    padding: bytes | None = None  # overrides the zero padding


@dataclass
class Craft:
    members: list[Member]
    key: PrivateKey
    expires: str = "2099-01-01T00:00:00Z"
    product: str = "demo"
    manifest_hook: Callable[[dict[str, Any]], None] | None = None
    sums_hook: Callable[[bytes], bytes] | None = None
    manifest_json_hook: Callable[[bytes], bytes] | None = None
    index_hook: Callable[[dict[str, Any]], None] | None = None
    before_index: bytes = b""  # frames inserted after the end-of-archive frame
    extra_frames: dict[int, bytes] = field(default_factory=dict)  # member number -> bytes inserted before it
    payload_type: str = IN_TOTO_PAYLOAD_TYPE
    statement_hook: Callable[[dict[str, Any]], None] | None = None

    def build(self) -> bytes:
        out = bytearray()
        index_members: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []

        def add(member: Member, number: int | None) -> dict[str, Any]:
            if number is not None and number in self.extra_frames:
                out.extend(self.extra_frames[number])
            start = len(out)
            head = member.raw_header or header(member.path, len(member.data))
            out.extend(_COMPRESSOR.compress(head))
            pad = (
                member.padding
                if member.padding is not None
                else bytes(tarfmt.padded_size(len(member.data)) - len(member.data))
            )
            frame = member.data_frame or _COMPRESSOR.compress(member.data + pad)
            out.extend(frame)
            entry = {
                "path": member.path,
                "offset": start,
                "length": len(out) - start,
                "size": len(member.data),
                "sha256": hashlib.sha256(member.data).hexdigest(),
                "frameSha256": hashlib.sha256(frame).hexdigest(),
            }
            if member.in_index:
                index_members.append(entry)
            return entry

        for number, member in enumerate(self.members):
            entry = add(member, number)
            if member.listed:
                files.append(
                    {
                        "path": member.path,
                        "size": entry["size"],
                        "sha256": entry["sha256"],
                        "role": "doc",
                        "component": "docs",
                        "frame": {"offset": entry["offset"], "length": entry["length"], "sha256": entry["frameSha256"]},
                    }
                )
        manifest = {
            "apiVersion": "kitbuilder/v1",
            "kind": "KitManifest",
            "kit": {
                "name": "hostile",
                "version": "1",
                "sequence": 1,
                "expires": self.expires,
                "product": self.product,
                "channel": "stable",
                "description": "",
            },
            "build": {
                "tool": "crafted",
                "compression": {"algorithm": "zstd", "level": 3, "multithreaded": False},
                "mtime": 0,
            },
            "components": [{"id": "docs", "role": "doc"}],
            "files": files,
        }
        if self.manifest_hook:
            self.manifest_hook(manifest)
        sums = checksums.render((f["path"], f["sha256"]) for f in manifest["files"])
        if self.sums_hook:
            sums = self.sums_hook(sums)
        manifest_bytes = jsonio.dump_pretty(manifest)
        statement = Statement(
            subjects=tuple(Subject(f["path"], f["sha256"]) for f in manifest["files"])
            + (Subject("SHA256SUMS", hashlib.sha256(sums).hexdigest()),),
            predicate_type=MANIFEST_PREDICATE_TYPE,
            predicate=manifest,
        ).to_json()
        if self.statement_hook:
            self.statement_hook(statement)
        envelope = sign_envelope(self.payload_type, jsonio.dump_compact(statement), [self.key])
        if self.manifest_json_hook:
            manifest_bytes = self.manifest_json_hook(manifest_bytes)
        metadata = {
            "SHA256SUMS": sums,
            "SHA256SUMS.sig": self.key.sign(sums),
            "manifest.json": manifest_bytes,
            "manifest.dsse.json": envelope.to_bytes(),
        }
        for name in METADATA_FILES:
            add(Member(name, metadata[name]), None)
        end_offset = len(out)
        out.extend(_COMPRESSOR.compress(tarfmt.END_OF_ARCHIVE))
        end_length = len(out) - end_offset
        out.extend(self.before_index)
        index = {
            "format": "kitbuilder-index/v1",
            "members": index_members,
            "end": {"offset": end_offset, "length": end_length},
        }
        if self.index_hook:
            self.index_hook(index)
        index_offset = len(out)
        out.extend(zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, jsonio.dump_compact(index)))
        out.extend(zstdframes.footer_frame(index_offset))
        return bytes(out)
