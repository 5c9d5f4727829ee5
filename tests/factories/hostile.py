"""A toolkit for crafting hostile kits, byte by byte, that are still *validly signed*.

A ``Recipe`` is a list of raw member specs plus knobs for every later layer
(manifest, SHA256SUMS, statement, envelope, end-of-archive frame, index,
footer). ``Recipe.build()`` lays the members out, computes a signed manifest,
SHA256SUMS, SHA256SUMS.sig and DSSE statement that agree with what was laid
out (unless a knob says otherwise), signs them with the trusted test key and
writes the end-of-archive frame, index and footer. So when the verifier
refuses one of these kits, it is the member/stream rule under test that
refused it, not the signature.

Building blocks, usable on their own:

- ``ustar_header``: any 512-byte header (any name/prefix bytes, type flag,
  mode, link name, magic, raw field bytes, right or wrong checksum).
- ``pax_records`` / ``gnu_longname``: the data of PAX and GNU extension members.
- ``zframe``: a normal zstd frame (content size and checksum, like the writer).
- ``frame_header``, ``raw_block``, ``rle_block``, ``hand_frame``, ``rle_frame``:
  hand-made zstd frames with any window, content size, dictionary id,
  reserved bits or block types, e.g. a 32 KiB frame that decodes to 1 GiB.

Where a signed or indexed value must lie, ``Member.signed`` and
``Member.index`` override fields of the manifest ``files[]`` entry and of the
index entry (a value, or a function of the honest value). By default the index
repeats what the manifest signs, as a careful attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import zstandard

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.index import INDEX_FORMAT
from kitbuilder.core import checksums, jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    METADATA_FILES_V1,
    SHA256SUMS,
    SHA256SUMS_SIG,
    Component,
    FileEntry,
    KitInfo,
    Manifest,
)
from kitbuilder.core.manifest_parts import BuildInfo, Compression
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import sign_envelope
from tests.factories.keys import ecdsa_key, ed25519_key

RELEASE = ed25519_key("release")  # the key the tests trust
OPS = ecdsa_key("ops")  # a second key a threshold may ask for
STRANGER = ed25519_key("stranger")  # a key nobody trusts

BLOCK = tarfmt.BLOCK
ZSTD_BLOCK_MAX = zstdframes.MAX_BLOCK

# ---------------------------------------------------------------------------------------------------------------
# tar headers


def _octal_field(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def ustar_header(
    name: str | bytes = "docs/a.md",
    size: int = 0,
    *,
    prefix: str | bytes = b"",
    mode: int = tarfmt.FILE_MODE,
    typeflag: bytes = b"0",
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    mtime: int = 0,
    uid: int = 0,
    gid: int = 0,
    raw: dict[int, bytes] | None = None,
    checksum: bytes | None = None,
) -> bytes:
    """A 512-byte ustar header with any field set; by default a valid regular file, as ``tarfmt`` writes it.

    ``name`` and ``prefix`` are written as given (str as UTF-8), not split or checked. ``raw`` maps header
    offsets to bytes written last (e.g. ``{124: b"\\x80..."}`` for a base-256 size). ``checksum`` replaces
    the correct chksum field with raw bytes.
    """
    block = bytearray(tarfmt.build_header("placeholder", 0, 0))

    def put(offset: int, width: int, value: bytes) -> None:
        if len(value) > width:
            raise ValueError(f"{value!r} does not fit {width} bytes at offset {offset}")
        block[offset : offset + width] = value.ljust(width, b"\0")

    put(0, 100, name.encode("utf-8") if isinstance(name, str) else name)
    put(345, 155, prefix.encode("utf-8") if isinstance(prefix, str) else prefix)
    put(100, 8, _octal_field(mode, 8))
    put(108, 8, _octal_field(uid, 8))
    put(116, 8, _octal_field(gid, 8))
    put(124, 12, _octal_field(size, 12))
    put(136, 12, _octal_field(mtime, 12))
    put(156, 1, typeflag)
    put(157, 100, linkname)
    put(257, 8, magic)
    for offset, value in (raw or {}).items():
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = checksum if checksum is not None else f"{sum(block):06o}".encode("ascii") + b"\0 "
    assert len(block) == BLOCK
    return bytes(block)


def pax_records(records: dict[str, str]) -> bytes:
    """The data of a PAX extended header: ``"<len> <key>=<value>\\n"`` records, each length counting itself."""
    out = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        length = len(body) + 1
        while len(str(length).encode()) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def gnu_longname(name: str) -> bytes:
    """The data of a GNU ``L`` (long name) or ``K`` (long link) member: the name and a NUL."""
    return name.encode() + b"\0"


# ---------------------------------------------------------------------------------------------------------------
# zstd frames

_COMPRESSOR = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)


def zframe(data: bytes) -> bytes:
    """One ordinary zstd frame (content size and XXH64 checksum, no dictionary), as the kit writer makes."""
    return _COMPRESSOR.compress(data)


def frame_header(
    *,
    window_log: int | None = 17,
    window_mantissa: int = 0,
    content_size: int | None = None,
    fcs_bytes: int | None = None,
    checksum: bool = False,
    dictionary_id: int | None = None,
    reserved_bit: bool = False,
) -> bytes:
    """A zstd frame header (RFC 8878 §3.1.1.1) with every field chosen by the caller.

    ``window_log=None`` makes a single-segment frame (window = content size, which is then required).
    """
    single_segment = window_log is None
    if content_size is None:
        fcs_width = 0
    elif fcs_bytes is not None:
        fcs_width = fcs_bytes
    elif single_segment and content_size < 256:
        fcs_width = 1
    elif 256 <= content_size < 65536 + 256:
        fcs_width = 2
    elif content_size < 1 << 32:
        fcs_width = 4
    else:
        fcs_width = 8
    if single_segment and not fcs_width:
        raise ValueError("a single-segment frame needs a content size")
    if fcs_width == 1 and not single_segment:
        raise ValueError("a 1-byte content size needs a single-segment frame")
    fcs_flag = {0: 0, 1: 0, 2: 1, 4: 2, 8: 3}[fcs_width]
    dict_width = 0 if dictionary_id is None else 4
    descriptor = (
        (fcs_flag << 6)
        | (int(single_segment) << 5)
        | (int(reserved_bit) << 3)
        | (int(checksum) << 2)
        | {0: 0, 4: 3}[dict_width]
    )
    out = struct.pack("<IB", zstdframes.ZSTD_MAGIC, descriptor)
    if not single_segment:
        assert window_log is not None
        out += bytes([((window_log - 10) << 3) | window_mantissa])
    if dictionary_id is not None:
        out += struct.pack("<I", dictionary_id)
    if content_size is not None:
        value = content_size - 256 if fcs_width == 2 else content_size
        out += value.to_bytes(fcs_width, "little")
    return out


def block_header(block_type: int, size: int, *, last: bool) -> bytes:
    value = int(last) | (block_type << 1) | (size << 3)
    return value.to_bytes(3, "little")


def raw_block(data: bytes, *, last: bool) -> bytes:
    return block_header(0, len(data), last=last) + data


def rle_block(byte: int, size: int, *, last: bool) -> bytes:
    return block_header(1, size, last=last) + bytes([byte])


def hand_frame(data: bytes, *, blocks: Sequence[bytes] | None = None, **header: Any) -> bytes:
    """A zstd frame of raw blocks holding ``data`` (or the given ``blocks``), header fields as ``frame_header``."""
    if blocks is None:
        pieces = [data[i : i + ZSTD_BLOCK_MAX] for i in range(0, len(data), ZSTD_BLOCK_MAX)] or [b""]
        blocks = [raw_block(piece, last=i == len(pieces) - 1) for i, piece in enumerate(pieces)]
    return frame_header(**header) + b"".join(blocks)


def rle_frame(total: int, *, byte: int = 0, **header: Any) -> bytes:
    """A tiny frame of RLE blocks that decodes to ``total`` copies of ``byte`` (1 GiB costs 32 KiB)."""
    full, rest = divmod(total, ZSTD_BLOCK_MAX)
    sizes = [ZSTD_BLOCK_MAX] * full + ([rest] if rest else [])
    blocks = [rle_block(byte, size, last=i == len(sizes) - 1) for i, size in enumerate(sizes)]
    return frame_header(**header) + b"".join(blocks)


# ---------------------------------------------------------------------------------------------------------------
# members and kits

Override = Any  # a value, or a function of the honest value


def _apply(target: dict[str, Any], overrides: dict[str, Override]) -> None:
    for key, value in overrides.items():
        target[key] = value(target[key]) if callable(value) else value


def padding_for(data: bytes) -> bytes:
    return bytes(tarfmt.padded_size(len(data)) - len(data))


@dataclass
class Member:
    """One tar member as it goes into the kit: a header frame then a data frame, each replaceable byte for byte.

    ``path`` is the name the signed manifest and the index give; the tar header says ``path`` too unless
    ``header`` (raw 512 bytes, or any bytes: it is the header frame's whole content) says otherwise.
    """

    path: str
    data: bytes = b""
    header: bytes | None = None  # content of the header frame; default: ustar_header(path, len(data))
    padding: bytes | None = None  # default: zeros to the next 512-byte boundary
    header_frame: bytes | None = None  # the compressed header frame itself (overrides ``header``)
    data_frame: bytes | None = None  # the compressed data frame itself (overrides data + padding)
    before: bytes = b""  # raw bytes written just before the member (not part of its span)
    between: bytes = b""  # raw bytes between its header frame and its data frame (part of its span)
    listed: bool = True  # in the signed manifest, SHA256SUMS and the statement
    indexed: bool = True  # in the archive index
    present: bool = True  # its frames are written at all
    signed: dict[str, Override] = field(default_factory=dict)  # keys: size, sha256, offset, length, frameSha256
    index: dict[str, Override] = field(default_factory=dict)  # same keys, on the index entry


@dataclass
class Crafted:
    """A built kit and where things landed in it."""

    data: bytes
    spans: dict[str, tuple[int, int]]  # path -> (offset, length) of each written member, last one wins
    end_offset: int
    index_offset: int


@dataclass
class Recipe:
    """Everything about a crafted kit; ``build()`` makes the bytes."""

    members: list[Member]
    signers: Sequence[PrivateKey] = (RELEASE,)  # DSSE signatures, in order (the same key twice is allowed)
    sums_signer: PrivateKey | None = None  # SHA256SUMS.sig; default: the first signer
    kit: dict[str, Any] = field(default_factory=dict)  # overrides of manifest `kit` (expires, product, ...)
    payload_type: str = IN_TOTO_PAYLOAD_TYPE
    manifest_hook: Callable[[dict[str, Any]], None] | None = None  # the predicate, before anything is derived
    sums_hook: Callable[[bytes], bytes] | None = None  # SHA256SUMS bytes (the statement then binds these)
    statement_hook: Callable[[dict[str, Any]], None] | None = None  # the statement, before signing
    payload_hook: Callable[[bytes], bytes] | None = None  # the statement bytes, after signing
    envelope_hook: Callable[[dict[str, Any]], None] | None = None  # the envelope JSON, after signing
    manifest_json_hook: Callable[[bytes], bytes] | None = None  # manifest.json bytes (not the signed predicate)
    metadata_hook: Callable[[Member], None] | None = None  # reshape a metadata member before it is written
    end_frame: bytes | None = None  # default: zframe(1024 zero bytes)
    after_end: bytes = b""  # raw bytes between the end-of-archive frame and the index
    index_hook: Callable[[dict[str, Any]], None] | None = None  # the index document
    index_bytes_hook: Callable[[bytes], bytes] | None = None  # the index frame's content
    index_magic: int = zstdframes.INDEX_MAGIC
    before_footer: bytes = b""  # raw bytes between the index frame and the footer
    footer_hook: Callable[[int], bytes] | None = None  # footer from the index offset
    trailer: bytes = b""  # raw bytes after the footer

    def build(self) -> Crafted:
        out = bytearray()
        spans: dict[str, tuple[int, int]] = {}
        index_entries: list[dict[str, Any]] = []

        def write(member: Member) -> dict[str, Any]:
            """Lay ``member`` out (unless absent); returns its honest entry: where it is and what it holds."""
            out.extend(member.before)
            start = len(out)
            # A name over 100 bytes (a delta's delta/patches/<sha256>/<sha256>) is split into prefix and name.
            honest = (
                ustar_header if len(member.path) <= 100 else (lambda path, size: tarfmt.build_header(path, size, 0))
            )
            head = member.header if member.header is not None else honest(member.path, len(member.data))
            head_frame = member.header_frame if member.header_frame is not None else zframe(head)
            pad = member.padding if member.padding is not None else padding_for(member.data)
            data_frame = member.data_frame if member.data_frame is not None else zframe(member.data + pad)
            if member.present:
                out.extend(head_frame + member.between + data_frame)
                spans[member.path] = (start, len(out) - start)
            return {
                "offset": start,
                "length": len(head_frame) + len(member.between) + len(data_frame),
                "size": len(member.data),
                "sha256": hashlib.sha256(member.data).hexdigest(),
                "frameSha256": hashlib.sha256(data_frame).hexdigest(),
            }

        def record_index(member: Member, base: dict[str, Any]) -> None:
            if member.indexed:
                entry = {"path": member.path, **base}
                _apply(entry, member.index)
                index_entries.append(entry)

        # Payload members, then a manifest that signs where they landed.
        files: list[FileEntry] = []
        for member in self.members:
            signed = write(member)
            _apply(signed, member.signed)
            if member.listed:
                files.append(
                    FileEntry(
                        path=member.path,
                        size=signed["size"],
                        sha256=signed["sha256"],
                        role="doc",
                        component="docs",
                        offset=signed["offset"],
                        length=signed["length"],
                        frame_sha256=signed["frameSha256"],
                    )
                )
            record_index(member, signed)

        kit: dict[str, Any] = {
            "name": "hostile-kit",
            "version": "1.0.0",
            "sequence": 1,
            "expires": "2099-01-01T00:00:00Z",
            "product": "demo",
            "channel": "stable",
            "description": "crafted by tests/factories/hostile.py",
        }
        kit.update(self.kit)
        manifest = Manifest(
            kit=KitInfo(**kit),
            build=BuildInfo(
                tool="tests/factories/hostile.py",
                compression=Compression(level=3, multithreaded=False),
                mtime=0,
            ),
            components=(Component(id="docs", role="doc"),),
            files=tuple(files),
        ).to_json()
        if self.manifest_hook is not None:
            self.manifest_hook(manifest)

        sums = checksums.render((f["path"], f["sha256"]) for f in manifest["files"])
        if self.sums_hook is not None:
            sums = self.sums_hook(sums)
        statement = Statement(
            subjects=tuple(Subject(name=f["path"], sha256=f["sha256"]) for f in manifest["files"])
            + (Subject(name=SHA256SUMS, sha256=hashlib.sha256(sums).hexdigest()),),
            predicate_type=MANIFEST_PREDICATE_TYPE,
            predicate=manifest,
        ).to_json()
        if self.statement_hook is not None:
            self.statement_hook(statement)
        envelope = sign_envelope(self.payload_type, jsonio.dump_compact(statement), list(self.signers)).to_json()
        if self.payload_hook is not None:
            payload = self.payload_hook(base64.b64decode(envelope["payload"]))
            envelope["payload"] = base64.b64encode(payload).decode("ascii")
        if self.envelope_hook is not None:
            self.envelope_hook(envelope)
        manifest_bytes = jsonio.dump_pretty(statement["predicate"])  # a copy of the predicate, as build writes it
        if self.manifest_json_hook is not None:
            manifest_bytes = self.manifest_json_hook(manifest_bytes)
        sums_signer = self.sums_signer or self.signers[0]
        metadata = {
            SHA256SUMS: sums,
            SHA256SUMS_SIG: sums_signer.sign(sums),
            MANIFEST_JSON: manifest_bytes,
            MANIFEST_DSSE: jsonio.dump_pretty(envelope),
        }
        for name in METADATA_FILES_V1:
            member = Member(name, metadata[name])
            if self.metadata_hook is not None:
                self.metadata_hook(member)
            record_index(member, write(member))

        end_offset = len(out)
        out.extend(self.end_frame if self.end_frame is not None else zframe(tarfmt.END_OF_ARCHIVE))
        end_length = len(out) - end_offset
        out.extend(self.after_end)

        index = {
            "format": INDEX_FORMAT,
            "members": index_entries,
            "end": {"offset": end_offset, "length": end_length},
        }
        if self.index_hook is not None:
            self.index_hook(index)
        index_bytes = jsonio.dump_compact(index)
        if self.index_bytes_hook is not None:
            index_bytes = self.index_bytes_hook(index_bytes)
        index_offset = len(out)
        out.extend(zstdframes.skippable_frame(self.index_magic, index_bytes))
        out.extend(self.before_footer)
        out.extend(self.footer_hook(index_offset) if self.footer_hook else zstdframes.footer_frame(index_offset))
        out.extend(self.trailer)
        return Crafted(data=bytes(out), spans=spans, end_offset=end_offset, index_offset=index_offset)


# ---------------------------------------------------------------------------------------------------------------
# a baseline kit and small helpers for cases


@cache
def pseudo_random(size: int, seed: int = 12345) -> bytes:
    """Deterministic, incompressible bytes (so a frame spans several zstd blocks)."""
    out = bytearray()
    state = seed
    while len(out) < size:
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out += state.to_bytes(8, "little")
    return bytes(out[:size])


def good_members() -> list[Member]:
    """The untampered payload: a small text file, a SQL script and a blob spanning several zstd blocks."""
    return [
        Member("docs/a.md", b"# Runbook\n\nVerify, then apply.\n"),
        Member("docs/b.sql", b"SELECT 1;\n" * 100),
        Member("docs/c.bin", pseudo_random(300_000)),
    ]


def kit(*members: Member, keep_good: bool = True, **recipe: Any) -> bytes:
    """Bytes of a validly signed kit: the good members (unless ``keep_good=False``) plus ``members``."""
    listed = (good_members() if keep_good else []) + list(members)
    return Recipe(members=listed, **recipe).build().data


def with_header(path: str, data: bytes = b"x", **fields: Any) -> Member:
    """A member signed and indexed as ``path`` whose tar header is ``ustar_header(**fields)`` (name: path)."""
    fields.setdefault("name", path)
    fields.setdefault("size", len(data))
    return Member(path, data, header=ustar_header(**fields))


def index_entry(index: dict[str, Any], path: str) -> dict[str, Any]:
    """The index entry for ``path`` (for index hooks)."""
    for entry in index["members"]:
        if entry["path"] == path:
            return entry  # type: ignore[no-any-return]
    raise KeyError(path)


# ---------------------------------------------------------------------------------------------------------------
# zstd frame encodings as a class (docs/format.md §1.5): the same bytes, or bytes that only look the same


_PLAIN = zstandard.ZstdCompressor(level=3, write_checksum=False, write_content_size=False)


def compressed_blocks(data: bytes) -> tuple[int, bytes]:
    """(window_log, blocks) of an ordinary zstd encoding of ``data``, without its frame header or checksum."""
    frame = _PLAIN.compress(data)
    descriptor, window = frame[4], frame[5]
    assert descriptor == 0 and window & 7 == 0, "expected a 6-byte header: no size, checksum or dictionary"
    return (window >> 3) + 10, frame[6:]


def raw_blocks(data: bytes, *, last: bool = True) -> bytes:
    """``data`` as raw blocks of at most 128 KiB; the final one marked last unless ``last=False``."""
    pieces = [data[i : i + ZSTD_BLOCK_MAX] for i in range(0, len(data), ZSTD_BLOCK_MAX)] or [b""]
    return b"".join(raw_block(piece, last=last and i == len(pieces) - 1) for i, piece in enumerate(pieces))


def frame_encodings(payload: bytes, hidden: bytes) -> dict[str, tuple[bytes, bool]]:
    """Data-frame encodings for a member whose content plus padding is ``payload``: name -> (frame, acceptable).

    ``acceptable`` says whether the frame decodes, exactly as ``zstd -d`` decodes it, to ``payload``: only
    then may a verifier accept it. ``hidden`` is what a lying frame smuggles (e.g. a whole tar member).
    Names starting with ``empty_`` are frames for an *empty* member (``payload`` ignored): their
    declared size is 0, and whatever they hold is extra bytes in the tar stream.
    """
    size = len(payload)
    window_log, blocks = compressed_blocks(payload)
    hidden_window, hidden_blocks = compressed_blocks(hidden)
    return {
        # -- encodings that decode to exactly the payload: any conforming encoder may write them
        "writer_frame": (zframe(payload), True),
        "content_size_absent_raw": (frame_header() + raw_blocks(payload), True),
        "content_size_absent_compressed": (frame_header(window_log=window_log) + blocks, True),
        "single_segment_raw": (frame_header(window_log=None, content_size=size) + raw_blocks(payload), True),
        "content_size_8_bytes": (frame_header(content_size=size, fcs_bytes=8) + raw_blocks(payload), True),
        "zero_dictionary_id": (frame_header(content_size=size, dictionary_id=0) + raw_blocks(payload), True),
        # -- a declared size of 0 with blocks that hold bytes: python-zstandard's one-shot call returns b""
        "empty_fcs0_raw": (frame_header(content_size=0, fcs_bytes=4) + raw_blocks(hidden), False),
        "empty_fcs0_single_segment_raw": (frame_header(window_log=None, content_size=0) + raw_blocks(hidden), False),
        "empty_fcs0_rle": (frame_header(content_size=0, fcs_bytes=4) + rle_block(0x41, 512, last=True), False),
        "empty_fcs0_compressed": (
            frame_header(window_log=hidden_window, content_size=0, fcs_bytes=4) + hidden_blocks,
            False,
        ),
        "empty_fcs0_corrupt": (
            frame_header(content_size=0, fcs_bytes=4) + block_header(2, 8, last=True) + b"\xff" * 8,
            False,
        ),
        "empty_fcs0_last_block_missing": (
            frame_header(content_size=0, fcs_bytes=4) + raw_blocks(hidden, last=False),
            False,
        ),
        # -- a declared size that is not the output
        "content_size_larger": (frame_header(content_size=size + 512, fcs_bytes=4) + raw_blocks(payload), False),
        "content_size_smaller": (frame_header(content_size=size - 256, fcs_bytes=4) + raw_blocks(payload), False),
        "content_size_smaller_compressed": (
            frame_header(window_log=window_log, content_size=size - 256, fcs_bytes=4) + blocks,
            False,
        ),
        # -- checksums
        "checksum_wrong": (
            frame_header(content_size=size, checksum=True) + raw_blocks(payload) + b"\0\0\0\0",
            False,
        ),
        "checksum_flipped": (zframe(payload)[:-1] + bytes([zframe(payload)[-1] ^ 1]), False),
        # -- header fields kits refuse (and zstd too, or it needs what kits never ship)
        "reserved_bit": (frame_header(content_size=size, reserved_bit=True) + raw_blocks(payload), False),
        "dictionary_id": (frame_header(content_size=size, dictionary_id=0x1234) + raw_blocks(payload), False),
        "window_over_cap": (frame_header(window_log=25, content_size=size) + raw_blocks(payload), False),
        # -- the frame's blocks: corrupt, cut, or in two frames where one is expected
        "corrupt_compressed_block": (
            frame_header(content_size=size) + block_header(2, 8, last=True) + b"\xff" * 8,
            False,
        ),
        "last_block_missing": (frame_header(content_size=size) + raw_blocks(payload, last=False), False),
        "two_frames": (zframe(payload[: size // 2]) + zframe(payload[size // 2 :]), False),
        "extra_bytes_after_frame": (zframe(payload) + b"garbage!", False),
        "skippable_frame_after_frame": (zframe(payload) + zstdframes.skippable_frame(0x184D2A50, hidden), False),
        "skippable_frame_instead": (zstdframes.skippable_frame(0x184D2A50, payload), False),
    }


def hidden_member(name: str = "docs/evil.sh") -> bytes:
    """A whole tar member (header, data, padding): what a lying frame smuggles into the tar stream."""
    data = b"#!/bin/sh\necho pwned\n"
    return ustar_header(name, len(data), mode=0o755) + data + padding_for(data)
