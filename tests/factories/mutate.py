"""Structure-aware mutations of valid kits, for the property test and the published test vectors.

A ``Mutation`` is a plain value (so Hypothesis prints it, shrinks it and a failure
can be replayed by hand): *where* in a kit (a member's tar header field, its
header or data frame, the end-of-archive frame, the index, the footer, a JSON
document, an attestation) and *what* is done there (a byte edit, an edge value,
another encoding of the same content). ``Mutation.build()`` makes the kit bytes.

Two attackers:

- **re-signed** mutations go through ``tests/factories/hostile.py``'s ``Recipe``, so
  every digest, offset, SHA256SUMS line, statement subject and signature is
  recomputed around the change: the kit is validly signed by the trusted key and
  only the mutated structure can make the verifier refuse it. Signed JSON
  documents edited below the level the Recipe derives from are re-signed here
  (``resign_envelope``).
- **raw** mutations edit the finished file, as anyone without a key can: they
  must be refused by a digest or a signature at the latest.

The ``attested`` base is what ``kit build`` itself writes for a tiny spec (kit
SBOM, SLSA provenance, a Sigstore key bundle); its attestation is re-signed with
the trusted key after its statement is edited.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import strategies as st

from kitbuilder.archive import zstdframes
from tests.factories import hostile
from tests.factories.hostile import RELEASE, Member, Recipe
from tests.factories.keys import write_pair

# ---------------------------------------------------------------------------------------------------------------
# the untampered kits


def compressible(size: int) -> bytes:
    """Text-like bytes that span several zstd blocks but compress to a few KB (so vectors stay small)."""
    line = b"kitbuilder property-test row %06d: verify, then apply.\n"
    out = b"".join(line % n for n in range(size // len(line) + 1))
    return out[:size]


def base_members() -> list[Member]:
    """Three payload files: a tiny doc, a SQL script, and a blob whose data frame holds two zstd blocks."""
    return [
        Member("docs/a.md", b"# Runbook\n\nVerify, then apply.\n"),
        Member("docs/b.sql", b"SELECT 1;\n" * 100),
        Member("docs/c.txt", compressible(140_000)),
    ]


PAYLOAD_PATHS = ("docs/a.md", "docs/b.sql", "docs/c.txt")
METADATA_PATHS = ("SHA256SUMS", "SHA256SUMS.sig", "manifest.json", "manifest.dsse.json")


def padded(data: bytes) -> bytes:
    return data + hostile.padding_for(data)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding, written from the DSSE spec (not kit's code)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def resign_envelope(envelope: dict[str, Any], payload: bytes, signers: Sequence[Any] = (RELEASE,)) -> None:
    """Put ``payload`` into ``envelope`` with fresh signatures by ``signers`` (a hostile signer's envelope)."""
    payload_type = envelope.get("payloadType")
    kind = payload_type if isinstance(payload_type, str) else ""
    envelope["payload"] = base64.b64encode(payload).decode("ascii")
    envelope["signatures"] = [
        {"keyid": key.keyid, "sig": base64.b64encode(key.sign(pae(kind, payload))).decode("ascii")} for key in signers
    ]


# ---------------------------------------------------------------------------------------------------------------
# byte edits


@dataclass(frozen=True)
class Edit:
    """One edit of a byte string; positions are taken modulo its length, so any edit applies to any target."""

    op: str  # flip | set | truncate | delete | duplicate | insert | zero-fill
    at: int = 0
    arg: int = 0
    data: bytes = b""

    def apply(self, data: bytes) -> bytes:
        if not data:
            return self.data if self.op == "insert" else data
        at = self.at % len(data)
        if self.op == "flip":
            return data[:at] + bytes([data[at] ^ (1 << (self.arg % 8))]) + data[at + 1 :]
        if self.op == "set":
            return data[:at] + bytes([self.arg % 256]) + data[at + 1 :]
        if self.op == "truncate":
            return data[:at]
        if self.op == "delete":
            return data[:at] + data[at + max(1, self.arg) :]
        if self.op == "duplicate":
            return data[:at] + data[at : at + max(1, self.arg)] + data[at:]
        if self.op == "insert":
            return data[:at] + self.data + data[at:]
        if self.op == "zero-fill":
            return data[:at] + bytes(len(data[at : at + max(1, self.arg)])) + data[at + max(1, self.arg) :]
        raise ValueError(self.op)


def edits(max_insert: int = 64) -> st.SearchStrategy[Edit]:
    position = st.integers(0, 1 << 20)
    return st.one_of(
        st.builds(Edit, op=st.just("flip"), at=position, arg=st.integers(0, 7)),
        st.builds(Edit, op=st.just("set"), at=position, arg=st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x20, 0x0A])),
        st.builds(Edit, op=st.just("truncate"), at=position),
        st.builds(Edit, op=st.just("delete"), at=position, arg=st.integers(1, 16)),
        st.builds(Edit, op=st.just("duplicate"), at=position, arg=st.integers(1, 600)),
        st.builds(Edit, op=st.just("zero-fill"), at=position, arg=st.integers(1, 64)),
        st.builds(
            Edit,
            op=st.just("insert"),
            at=position,
            data=st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=max_insert),
        ),
    )


def _empty_zstd_frame() -> bytes:
    return zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(b"")


def _evil_member() -> bytes:
    data = b"#!/bin/sh\necho pwned\n"
    return hostile.zframe(hostile.ustar_header("docs/evil.sh", len(data), mode=0o755)) + hostile.zframe(padded(data))


# Byte strings that mean something to a zstd or tar reader, for insertions between and inside frames.
INSERTS: tuple[bytes, ...] = (
    b"\x50\x2a\x4d\x18\x00\x00\x00\x00",  # an empty skippable frame
    b"\x5b\x2a\x4d\x18\x02\x00\x00\x00{}",  # a second "index" skippable frame
    b"\x28\xb5\x2f\xfd",  # a zstd magic alone
    _empty_zstd_frame(),
    hostile.zframe(bytes(512)),  # one zero tar block: an early end-of-archive to a lenient reader
    hostile.zframe(bytes(1024)),
    _evil_member(),
    bytes(24),
)

# ---------------------------------------------------------------------------------------------------------------
# tar header fields

TAR_FIELDS: dict[str, tuple[int, int]] = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
    "unused": (500, 12),
}
NUMERIC_FIELDS = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")


def numeric_encodings(value: int, width: int) -> list[bytes]:
    """Spellings of ``value`` (and near values) in a ``width``-byte numeric field, honest and hostile."""
    digits = f"{value:o}"
    out = [
        digits.rjust(width - 1, "0").encode() + b"\0",  # the writer's form
        digits.rjust(width - 1, "0").encode() + b"\n",  # a regex with `$` accepts it
        digits.rjust(width - 1, "0").encode() + b" ",  # old tar: space-terminated
        digits.rjust(width - 2, "0").encode() + b" \0",  # space then NUL (the chksum style)
        digits.rjust(width - 1, " ").encode() + b"\0",  # space-padded instead of zero-padded
        digits.rjust(width, "0").encode(),  # no terminator at all
        b"\0" + digits.rjust(width - 2, "0").encode() + b"\0",  # leading NUL: 0 to one reader, value to GNU tar
        b"\0" * width,
        b" " * width,
        b"+" + digits.rjust(width - 2, "0").encode() + b"\0",
        b"-" + b"1".rjust(width - 2, b"0") + b"\0",
        b"\x80" + value.to_bytes(width - 1, "big"),  # base-256
        b"\xff" * width,  # base-256, negative
        digits.rjust(width - 1, "0").encode()[: width - 2] + b"8\0",  # not octal
        b"0x" + f"{value:x}".rjust(width - 3, "0").encode() + b"\0",
        digits.rjust(width - 3, "0").encode() + b"\0\0\0",
        (digits.rjust(width - 1, "0")[:-1] + "\u0663").encode()[:width].ljust(width, b"\0"),  # an Arabic-Indic digit
    ]
    return [v[:width].ljust(width, b"\0") for v in out]


NAME_VALUES: tuple[bytes, ...] = (
    b"docs/a.md",
    b"docs/b.sql",  # another member's name: a duplicate
    b"docs/A.md",
    b"./docs/a.md",
    b"docs//a.md",
    b"docs/./a.md",
    b"docs/a.md/",
    b"../docs/a.md",
    b"docs/../../etc/passwd",
    b"/etc/cron.d/evil",
    b"docs\\a.md",
    b"docs/a.md\n",
    b"docs/a.md\0hidden",
    b"docs/caf\xc3\xa9.md",
    b"docs/\xff\xfe.md",
    b"docs/\x1b[2J.md",
    b"",
    b"n" * 100,
    b"pax_global_header",
    b"././@LongLink",
    b"SHA256SUMS",
    b"manifest.json",
)
STRING_VALUES: dict[str, tuple[bytes, ...]] = {
    "name": NAME_VALUES,
    "prefix": (b"", b"docs", b"/etc", b"..", b"docs/..", b"a" * 155, b"DOCS", b"docs\n"),
    "linkname": (b"", b"/etc/passwd", b"docs/a.md", b"../../x", b"x" * 100),
    "magic": (b"ustar\0", b"ustar ", b"ustar\x20\x20", b"\0" * 6, b"USTAR\0", b"ustar0"),
    "version": (b"00", b" \0", b"\0\0", b"01", b"0\0"),
    "uname": (b"", b"root", b"\xff" * 32, b"a" * 32),
    "gname": (b"", b"root", b"\x1b[2J"),
    "typeflag": tuple(bytes([c]) for c in b"0\x00123456789xgLKSAVDMNZ "),
    "unused": (bytes(12), b"\x01" * 12, b"ustar\0" + bytes(6), b"0" * 12),
}


@dataclass(frozen=True)
class TarField:
    """Set one field of ``member``'s tar header, then write its checksum as ``checksum`` says.

    A numeric field gets ``numeric_encodings(number, width)[spelling]``, where ``number`` None means the honest
    value (the member's real size, mode 0644, zero elsewhere): the same number spelled another way is where two
    tar readers disagree. Other fields get ``value`` as raw bytes.
    """

    member: str
    field: str
    value: bytes = b""
    number: int | None = None
    spelling: int = 0
    checksum: str = "fix"  # fix | stale | space-nul | seven-digits | leading-space | unsigned-low

    def field_bytes(self, data: bytes) -> bytes:
        _, width = TAR_FIELDS[self.field]
        if self.field in NUMERIC_FIELDS:
            honest = {"size": len(data), "mode": 0o644}.get(self.field, 0)
            spellings = numeric_encodings(honest if self.number is None else self.number, width)
            return spellings[self.spelling % len(spellings)]
        return self.value[:width].ljust(width, b"\0")

    def header(self, data: bytes) -> bytes:
        block = bytearray(hostile.ustar_header(self.member, len(data)))
        offset, width = TAR_FIELDS[self.field]
        block[offset : offset + width] = self.field_bytes(data)
        if self.field == "chksum" or self.checksum == "stale":
            return bytes(block)
        block[148:156] = b" " * 8
        total = sum(block)
        block[148:156] = {
            "fix": f"{total:06o}".encode() + b"\0 ",
            "space-nul": f"{total:06o}".encode() + b" \0",
            "seven-digits": f"{total:07o}".encode() + b"\0",
            "leading-space": f" {total:05o}".encode() + b"\0 ",
            "unsigned-low": f"{total & 0xFFF:06o}".encode() + b"\0 ",
        }[self.checksum]
        return bytes(block)


def tar_fields(members: Sequence[str] = PAYLOAD_PATHS + METADATA_PATHS) -> st.SearchStrategy[TarField]:
    numbers = st.none() | st.sampled_from([0, 1, 512, 0o644, 0o4755, 0o777, 8**11 - 1, 2**33])
    checksums = st.sampled_from(["fix", "fix", "fix", "stale", "space-nul", "seven-digits", "leading-space"])
    numeric = st.builds(
        TarField,
        member=st.sampled_from(list(members)),
        field=st.sampled_from(NUMERIC_FIELDS),
        number=numbers,
        spelling=st.integers(0, 16),
        checksum=checksums,
    )
    chksum = st.builds(
        TarField,
        member=st.sampled_from(list(members)),
        field=st.just("chksum"),
        value=st.sampled_from([b"\0" * 8, b" " * 8, b"0000000\0", b"7777777\0", b"\x80" + bytes(7)]),
    )
    text = st.sampled_from(sorted(STRING_VALUES)).flatmap(
        lambda name: st.builds(
            TarField,
            member=st.sampled_from(list(members)),
            field=st.just(name),
            value=st.sampled_from(STRING_VALUES[name]) | st.binary(min_size=0, max_size=TAR_FIELDS[name][1]),
            checksum=checksums,
        )
    )
    return st.one_of(numeric, chksum, text)


# ---------------------------------------------------------------------------------------------------------------
# other encodings of one frame's content


def _xxh64_low(data: bytes) -> bytes:
    """The 4-byte zstd content checksum of ``data``, taken from libzstd itself (no xxhash dependency)."""
    frame = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)
    return frame[-4:]


def _raw_blocks(data: bytes, size: int = hostile.ZSTD_BLOCK_MAX) -> list[bytes]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [hostile.raw_block(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]


def _oversized_raw_block(data: bytes) -> bytes:
    return hostile.frame_header(content_size=len(data)) + hostile.block_header(0, len(data), last=True) + data


def _compress(level: int, **options: Any) -> Callable[[bytes], bytes]:
    return lambda data: zstandard.ZstdCompressor(level=level, **options).compress(data)


# name -> how the content of a frame is encoded instead of the writer's single compressed frame.
ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "level-1": _compress(1, write_checksum=True),
    "level-19": _compress(19, write_checksum=True),
    "no-checksum": _compress(3, write_checksum=False),
    "no-content-size": _compress(3, write_checksum=True, write_content_size=False),
    "raw-blocks": lambda d: hostile.hand_frame(d, content_size=len(d), fcs_bytes=8),
    "raw-blocks-checksum": lambda d: (
        hostile.hand_frame(d, content_size=len(d), fcs_bytes=8, checksum=True) + _xxh64_low(d)
    ),
    "raw-blocks-wrong-checksum": lambda d: (
        hostile.hand_frame(d, content_size=len(d), fcs_bytes=8, checksum=True) + b"\0\0\0\0"
    ),
    "raw-blocks-missing-checksum": lambda d: hostile.hand_frame(d, content_size=len(d), fcs_bytes=8, checksum=True),
    "raw-blocks-single-segment": lambda d: hostile.hand_frame(d, window_log=None, content_size=len(d)),
    "raw-blocks-fcs0": lambda d: hostile.hand_frame(d, content_size=0, fcs_bytes=8),
    "raw-blocks-fcs-short": lambda d: hostile.hand_frame(d, content_size=max(0, len(d) - 1), fcs_bytes=8),
    "raw-blocks-fcs-long": lambda d: hostile.hand_frame(d, content_size=len(d) + 1, fcs_bytes=8),
    "raw-blocks-no-fcs": lambda d: hostile.hand_frame(d),
    "raw-blocks-dictionary": lambda d: hostile.hand_frame(d, content_size=len(d), fcs_bytes=8, dictionary_id=1),
    "raw-blocks-reserved-bit": lambda d: hostile.hand_frame(d, content_size=len(d), fcs_bytes=8, reserved_bit=True),
    "raw-blocks-window-1g": lambda d: hostile.hand_frame(d, window_log=30, content_size=len(d), fcs_bytes=8),
    "raw-blocks-small": lambda d: hostile.hand_frame(d, blocks=_raw_blocks(d, 100), content_size=len(d), fcs_bytes=8),
    "raw-block-oversized": _oversized_raw_block,
    "empty-block-first": lambda d: hostile.hand_frame(
        d, blocks=[hostile.raw_block(b"", last=False), *_raw_blocks(d)], content_size=len(d), fcs_bytes=8
    ),
    "no-last-block": lambda d: hostile.hand_frame(
        d, blocks=[hostile.raw_block(d[i : i + 100_000], last=False) for i in range(0, len(d), 100_000)]
    ),
    "reserved-block-type": lambda d: (
        hostile.frame_header(content_size=len(d), fcs_bytes=8) + hostile.block_header(3, len(d), last=True) + d
    ),
    "two-frames": lambda d: hostile.zframe(d[: len(d) // 2]) + hostile.zframe(d[len(d) // 2 :]),
    "frame-then-empty-frame": lambda d: hostile.zframe(d) + _empty_zstd_frame(),
    "frame-then-skippable": lambda d: hostile.zframe(d) + INSERTS[0],
    "skippable-then-frame": lambda d: INSERTS[0] + hostile.zframe(d),
    "legacy-v07-magic": lambda d: b"\x27\xb5\x2f\xfd" + hostile.zframe(d)[4:],
}
VALID_ENCODINGS = frozenset(
    {"level-1", "level-19", "no-checksum", "raw-blocks", "raw-blocks-checksum", "raw-blocks-single-segment"}
)


# ---------------------------------------------------------------------------------------------------------------
# JSON edits


class Pairs(list):  # type: ignore[type-arg]
    """A JSON object written from a list of (key, value) pairs, so it can hold a key twice."""


EDGE_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    1.5,
    1e308,
    "",
    " ",
    "\ud800",
    "\x00",
    "\x1b]0;ok\x07kit: OK\n",
    "../x",
    "/etc/passwd",
    "docs/a.md",
    "docs/A.md",
    "a" * 300,
    "0" * 64,
    "f" * 64,
    "2099-02-30T00:00:00Z",
    "2099-12-31T23:59:60Z",
    "9999-12-31T23:59:59-01:00",
    "2000-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2099-01-01T00:00:00+00:00",
    "2099-01-01T00:00:00Z\n",
    [],
    {},
    [None],
    ["up.sql"],
    {"": None},
)
EXTRA_KEYS: tuple[str, ...] = ("x", "", "__proto__", "payloadType", "path", "size", "Path", "signatures", "kit")


@dataclass(frozen=True)
class JsonEdit:
    """Change one node of a JSON document: ``node`` numbers the nodes in document order (modulo their count)."""

    node: int
    op: str  # set | delete | add-key | duplicate-key | duplicate-item | wrap | stringify | tweak
    value: Any = None
    key: str = "x"
    at: tuple[Any, ...] | None = None  # a JSON path that overrides ``node`` (for hand-written cases)

    def apply(self, document: Any) -> Any:
        document = copy.deepcopy(document)  # never alias the caller's tree (a wrapped root would contain itself)
        paths = list(_nodes(document))
        path = self.at if self.at is not None else paths[self.node % len(paths)]
        parent, last = _parent(document, path)
        if isinstance(parent, dict) and last not in parent:  # a hand-written path to a key that is not there
            parent[last] = None
        node = _get(document, path)
        if self.op == "set":
            replacement: Any = self.value
        elif self.op == "delete" and parent is not None:
            if isinstance(parent, dict):
                del parent[last]
            else:
                del parent[last]
            return document
        elif self.op == "add-key" and isinstance(node, dict):
            node[self.key] = self.value
            return document
        elif self.op == "duplicate-key" and isinstance(node, dict) and node:
            first = next(iter(node))
            replacement = Pairs([(first, self.value), *node.items()])
        elif self.op == "duplicate-item" and isinstance(node, list) and node:
            node.append(json.loads(json.dumps(node[0])))
            return document
        elif self.op == "wrap":
            replacement = [node]
        elif self.op == "stringify":
            replacement = json.dumps(node)
        elif self.op == "tweak":
            replacement = _tweak(node)
        else:
            replacement = self.value
        if parent is None:
            return replacement
        parent[last] = replacement
        return document


def _tweak(node: Any) -> Any:
    """A near miss of ``node``: off by one, a case change, one digit changed, a trailing newline."""
    if isinstance(node, bool):
        return not node
    if isinstance(node, int):
        return node + 1
    if isinstance(node, str):
        if len(node) == 64 and all(c in "0123456789abcdef" for c in node):
            return ("1" if node[0] != "1" else "2") + node[1:]
        return node.upper() if node != node.upper() else node + "\n"
    if isinstance(node, list):
        return node[::-1] if len(node) > 1 else node + node
    if isinstance(node, dict):
        return {k.upper() if i == 0 else k: v for i, (k, v) in enumerate(node.items())}
    return node


def _nodes(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(document, dict):
        for key in document:
            yield from _nodes(document[key], (*path, key))
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from _nodes(item, (*path, index))


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _parent(document: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    if not path:
        return None, None
    return _get(document, path[:-1]), path[-1]


def json_edits() -> st.SearchStrategy[JsonEdit]:
    node = st.integers(0, 10_000)
    return st.one_of(
        st.builds(JsonEdit, node=node, op=st.just("set"), value=st.sampled_from(EDGE_VALUES)),
        st.builds(JsonEdit, node=node, op=st.sampled_from(["delete", "duplicate-item", "wrap", "stringify", "tweak"])),
        st.builds(
            JsonEdit,
            node=node,
            op=st.just("add-key"),
            value=st.sampled_from(EDGE_VALUES),
            key=st.sampled_from(EXTRA_KEYS),
        ),
        st.builds(JsonEdit, node=node, op=st.just("duplicate-key"), value=st.sampled_from(EDGE_VALUES)),
    )


def dump(document: Any, *, pretty: bool) -> bytes:
    """JSON as kit writes it where possible; lone surrogates escaped, duplicate keys (``Pairs``) kept."""
    if _has_pairs(document):
        return _dump_pairs(document).encode("utf-8", "surrogatepass")
    options: dict[str, Any] = {"sort_keys": True, "ensure_ascii": False}
    options |= {"indent": 2} if pretty else {"separators": (",", ":")}
    text = json.dumps(document, **options) + ("\n" if pretty else "")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(document, **(options | {"ensure_ascii": True})) + ("\n" if pretty else "")).encode()


def _has_pairs(document: Any) -> bool:
    if isinstance(document, Pairs):
        return True
    if isinstance(document, dict):
        return any(_has_pairs(v) for v in document.values())
    if isinstance(document, list):
        return any(_has_pairs(v) for v in document)
    return False


def _dump_pairs(document: Any) -> str:
    if isinstance(document, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump_pairs(v)}" for k, v in document) + "}"
    if isinstance(document, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump_pairs(v)}" for k, v in document.items()) + "}"
    if isinstance(document, list):
        return "[" + ",".join(_dump_pairs(v) for v in document) + "]"
    return json.dumps(document)


# ---------------------------------------------------------------------------------------------------------------
# mutations of the plain (Recipe-built) kit


@dataclass(frozen=True)
class Mutation:
    """Where and what; ``build()`` makes the kit. ``resigned`` says whether signatures were recomputed."""

    layer: str
    where: str = ""
    edit: Edit | JsonEdit | TarField | None = None
    encoding: str = ""
    resigned: bool = True

    def build(self) -> bytes:
        return BUILDERS[self.layer](self)

    def describe(self) -> str:
        what = self.encoding or repr(self.edit)
        return f"{self.layer}[{self.where}] {what} ({'re-signed' if self.resigned else 'unsigned'})"


def _recipe(**knobs: Any) -> Recipe:
    return Recipe(members=base_members(), **knobs)


def plain_kit() -> bytes:
    return _recipe().build().data


def _member_knob(mutation: Mutation, change: Callable[[Member], None]) -> bytes:
    members = base_members()
    if mutation.where in PAYLOAD_PATHS:
        change(next(m for m in members if m.path == mutation.where))
        return Recipe(members=members).build().data

    def hook(member: Member) -> None:
        if member.path == mutation.where:
            change(member)

    return Recipe(members=members, metadata_hook=hook).build().data


def _tar_field(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, TarField)
    edit = mutation.edit

    def change(member: Member) -> None:
        member.header = edit.header(member.data)

    return _member_knob(mutation, change)


def _header_frame(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    edit = mutation.edit

    def change(member: Member) -> None:
        member.header_frame = edit.apply(hostile.zframe(hostile.ustar_header(member.path, len(member.data))))

    return _member_knob(mutation, change)


def _data_frame(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    edit = mutation.edit

    def change(member: Member) -> None:
        member.data_frame = edit.apply(hostile.zframe(padded(member.data)))

    return _member_knob(mutation, change)


def _encoding(mutation: Mutation) -> bytes:
    encode = ENCODINGS[mutation.encoding]

    def change(member: Member) -> None:
        member.data_frame = encode(padded(member.data))

    return _member_knob(mutation, change)


def _header_encoding(mutation: Mutation) -> bytes:
    encode = ENCODINGS[mutation.encoding]

    def change(member: Member) -> None:
        member.header_frame = encode(hostile.ustar_header(member.path, len(member.data)))

    return _member_knob(mutation, change)


SMUGGLE_ENCODINGS: dict[str, Callable[[bytes, int], bytes]] = {
    # (what the frame really holds, the size the signer declares) -> frame
    "fcs0-raw": lambda d, n: hostile.hand_frame(d, content_size=0, fcs_bytes=8),
    "fcs-declared-raw": lambda d, n: hostile.hand_frame(d, content_size=n, fcs_bytes=8),
    "fcs-declared-single-segment": lambda d, n: hostile.hand_frame(d, window_log=None, content_size=n, fcs_bytes=8),
    "no-fcs-raw": lambda d, n: hostile.hand_frame(d),
    "fcs-declared-compressed": lambda d, n: _with_content_size(hostile.zframe(d), n),
}


def _with_content_size(frame: bytes, size: int) -> bytes:
    """``frame`` (8-byte content size written by zstandard for large inputs or not) re-headed to declare ``size``."""
    descriptor = frame[4]
    if descriptor >> 6 != 3:  # rebuild with an 8-byte FCS, keeping the checksum flag and the blocks
        return frame
    return frame[:6] + size.to_bytes(8, "little") + frame[14:]


def _smuggle(mutation: Mutation) -> bytes:
    """A hostile signer signs what a lenient decoder sees in a member, while the frame holds a whole hidden
    tar member (header and data) after it: stock ``zstd -dc | tar -x`` extracts the hidden file too."""
    encode = SMUGGLE_ENCODINGS[mutation.encoding]
    members = base_members()
    member = next(m for m in members if m.path == mutation.where)
    if mutation.edit is not None and isinstance(mutation.edit, Edit) and mutation.edit.op == "truncate":
        member.data = b""
    signed = padded(member.data)
    member.data_frame = encode(signed + _hidden_member(), len(signed))
    return Recipe(members=members).build().data


def _hidden_member() -> bytes:
    data = b"#!/bin/sh\necho pwned\n"
    return hostile.ustar_header("docs/evil.sh", len(data), mode=0o755) + padded(data)


def _padding(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    edit = mutation.edit

    def change(member: Member) -> None:
        member.padding = edit.apply(hostile.padding_for(member.data) or b"")

    return _member_knob(mutation, change)


def _insert(mutation: Mutation) -> bytes:
    """Bytes at a frame boundary: before or inside a member, after the end frame, before the footer, after it."""
    assert isinstance(mutation.edit, Edit)
    data = mutation.edit.data
    place, _, path = mutation.where.partition(":")
    if place in ("before", "between"):
        members = base_members()
        setattr(next(m for m in members if m.path == path), place, data)
        return Recipe(members=members).build().data
    return _recipe(**{place: data}).build().data


def _end_frame(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    content = {"1024": bytes(1024), "512": bytes(512), "1536": bytes(1536), "0": b"", "nonzero": b"\1" * 1024}
    base = content[mutation.where]
    frame = ENCODINGS[mutation.encoding](base) if mutation.encoding else hostile.zframe(base)
    return _recipe(end_frame=mutation.edit.apply(frame)).build().data


def _index_json(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, JsonEdit)
    edit = mutation.edit
    return _recipe(index_bytes_hook=lambda raw: dump(edit.apply(json.loads(raw)), pretty=False)).build().data


def _index_bytes(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    return _recipe(index_bytes_hook=mutation.edit.apply).build().data


def _footer(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    edit = mutation.edit
    return _recipe(footer_hook=lambda offset: edit.apply(zstdframes.footer_frame(offset))).build().data


def _signed_predicate(mutation: Mutation) -> bytes:
    """Edit the manifest before SHA256SUMS and the statement are derived from it: a hostile signer's manifest."""
    assert isinstance(mutation.edit, JsonEdit)
    edit = mutation.edit

    def hook(manifest: dict[str, Any]) -> None:
        edited = edit.apply(manifest)
        manifest.clear()
        manifest.update(edited if isinstance(edited, dict) else {"kit": edited})

    try:
        return _recipe(manifest_hook=hook).build().data
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, UnicodeEncodeError):
        # The factory derives SHA256SUMS and subjects from the manifest; when the edit broke what it
        # reads, sign the edited statement as it is instead.
        return _signed_statement(Mutation("signed-statement", "predicate", JsonEdit(edit.node, edit.op, edit.value)))


def _signed_statement(mutation: Mutation) -> bytes:
    """Edit the signed statement's bytes-level JSON and re-sign it; manifest.json stays a copy of the predicate."""
    assert isinstance(mutation.edit, JsonEdit)
    edit = mutation.edit
    state: dict[str, bytes] = {}

    def payload(raw: bytes) -> bytes:
        statement = json.loads(raw)
        if mutation.where == "predicate":
            statement["predicate"] = edit.apply(statement["predicate"])
        else:
            statement = edit.apply(statement)
        state["predicate"] = (
            dump(statement["predicate"], pretty=True)
            if isinstance(statement, dict) and "predicate" in statement
            else b"{}\n"
        )
        state["payload"] = dump(statement, pretty=False)
        return state["payload"]

    def envelope(document: dict[str, Any]) -> None:
        resign_envelope(document, state["payload"])

    return (
        _recipe(payload_hook=payload, envelope_hook=envelope, manifest_json_hook=lambda _: state["predicate"])
        .build()
        .data
    )


def _sums(mutation: Mutation) -> bytes:
    """Edit SHA256SUMS; the statement binds the edited bytes and SHA256SUMS.sig signs them."""
    assert isinstance(mutation.edit, Edit)
    return _recipe(sums_hook=mutation.edit.apply).build().data


def _unsigned_json(mutation: Mutation) -> bytes:
    """Edit manifest.json or the DSSE envelope without a key."""
    assert isinstance(mutation.edit, JsonEdit)
    edit = mutation.edit
    if mutation.where == "manifest.json":
        return _recipe(manifest_json_hook=lambda raw: dump(edit.apply(json.loads(raw)), pretty=True)).build().data

    state: dict[str, Any] = {}

    def keep(document: dict[str, Any]) -> None:
        state["envelope"] = edit.apply(document)

    def replace(member: Member) -> None:  # written by ``dump``, which can also write what kit's writer cannot
        if member.path == "manifest.dsse.json":
            member.data = dump(state["envelope"], pretty=True)

    return _recipe(envelope_hook=keep, metadata_hook=replace).build().data


def _envelope_bytes(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    edit = mutation.edit

    def hook(member: Member) -> None:
        if member.path == mutation.where:
            member.data = edit.apply(member.data)

    return _recipe(metadata_hook=hook).build().data


def _raw(mutation: Mutation) -> bytes:
    """Edit the finished file inside one region, without a key."""
    assert isinstance(mutation.edit, Edit)
    crafted = _recipe().build()
    data = crafted.data
    footer = len(data) - zstdframes.FOOTER_SIZE
    regions = {path: (start, start + length) for path, (start, length) in crafted.spans.items()}
    regions |= {
        "end": (crafted.end_offset, crafted.index_offset),
        "index": (crafted.index_offset, footer),
        "footer": (footer, len(data)),
    }
    start, stop = regions[mutation.where]
    return data[:start] + mutation.edit.apply(data[start:stop]) + data[stop:]


# ---------------------------------------------------------------------------------------------------------------
# the attested kit: what `kit build` writes, with provenance and a Sigstore key bundle

ATTESTED_SPEC = """\
apiVersion: kitbuilder/v1
name: attested-kit
version: "1.0.0"
sequence: 1
expires: "2099-01-01T00:00:00Z"
product: demo
channel: stable
description: property-test kit with provenance and a Sigstore bundle
migrations:
  - id: 21-101-shard-index
    phase: "21-101"
    source: src/migrations
docs:
  - id: operator
    source: src/docs
"""
PROVENANCE = "attestations/provenance.dsse.json"
BUNDLE = "SHA256SUMS.sigstore.json"
SOURCE_DATE_EPOCH = "1764547200"


@cache
def attested_kit() -> bytes:
    """A real `kit build` of a tiny spec (run once per process), signed by the trusted test key."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src/migrations").mkdir(parents=True)
        (root / "src/docs").mkdir(parents=True)
        (root / "src/migrations/up.sql").write_text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY);\n")
        (root / "src/migrations/verify.sql").write_text("SELECT COUNT(*) >= 0 FROM t;\n")
        (root / "src/migrations/revert.sql").write_text("DROP TABLE IF EXISTS t;\n")
        (root / "src/docs/RUNBOOK.md").write_text("# Runbook\n\nVerify, then apply.\n")
        (root / "kit.yaml").write_text(ATTESTED_SPEC)
        key, _ = write_pair(RELEASE, root / "release")
        out = root / "attested.kit.tar.zst"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "KIT_STATE_DIR": str(root / "state")}
        env.pop("KIT_PASSPHRASE", None)
        command = [sys.executable, "-m", "kitbuilder.cli", "build", str(root / "kit.yaml"), "--key", str(key)]
        command += ["--out", str(out), "--sigstore-bundle", "--builder-id", "https://ci.example/property"]
        subprocess.run(command, check=True, capture_output=True, cwd=root, env=env)
        return out.read_bytes()


def _replace_members(kit: bytes, replace: dict[str, bytes]) -> bytes:
    from tests.factories.kits import rewrite_kit

    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.kit.tar.zst", Path(tmp) / "out.kit.tar.zst"
        source.write_bytes(kit)
        return rewrite_kit(source, out, replace).read_bytes()


@cache
def attested_members() -> dict[str, bytes]:
    from tests.factories.kits import kit_members

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kit.kit.tar.zst"
        path.write_bytes(attested_kit())
        return kit_members(path)


def _attestation(mutation: Mutation) -> bytes:
    """Edit the provenance statement and re-sign it, or edit its envelope (or the bundle) without a key."""
    assert isinstance(mutation.edit, JsonEdit)
    members = attested_members()
    if mutation.where == "provenance-statement":
        envelope = json.loads(members[PROVENANCE])
        statement = mutation.edit.apply(json.loads(base64.b64decode(envelope["payload"])))
        resign_envelope(envelope, dump(statement, pretty=False))
        return _replace_members(attested_kit(), {PROVENANCE: dump(envelope, pretty=True)})
    name = PROVENANCE if mutation.where == "provenance-envelope" else BUNDLE
    edited = mutation.edit.apply(json.loads(members[name]))
    return _replace_members(attested_kit(), {name: dump(edited, pretty=True)})


def _attested_raw(mutation: Mutation) -> bytes:
    assert isinstance(mutation.edit, Edit)
    data = attested_kit()
    index_offset = int.from_bytes(data[-8:], "little")
    start, stop = {"members": (0, index_offset), "index": (index_offset, len(data))}[mutation.where]
    return data[:start] + mutation.edit.apply(data[start:stop]) + data[stop:]


BUILDERS: dict[str, Callable[[Mutation], bytes]] = {
    "tar-field": _tar_field,
    "header-frame": _header_frame,
    "header-encoding": _header_encoding,
    "data-frame": _data_frame,
    "data-encoding": _encoding,
    "padding": _padding,
    "smuggle": _smuggle,
    "insert": _insert,
    "end-frame": _end_frame,
    "index-json": _index_json,
    "index-bytes": _index_bytes,
    "footer": _footer,
    "signed-predicate": _signed_predicate,
    "signed-statement": _signed_statement,
    "sha256sums": _sums,
    "unsigned-json": _unsigned_json,
    "metadata-bytes": _envelope_bytes,
    "raw": _raw,
    "attestation": _attestation,
    "attested-raw": _attested_raw,
}
ATTESTED_LAYERS = frozenset({"attestation", "attested-raw"})

# ---------------------------------------------------------------------------------------------------------------
# the strategy


def mutations() -> st.SearchStrategy[Mutation]:
    """Pick a part of a kit, then a change that means something to the reader of that part."""
    members = st.sampled_from(PAYLOAD_PATHS + METADATA_PATHS)
    payload = st.sampled_from(PAYLOAD_PATHS)
    inserts = st.builds(Edit, op=st.just("insert"), data=st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=64))
    places = st.sampled_from(
        [f"before:{p}" for p in PAYLOAD_PATHS] + [f"between:{p}" for p in PAYLOAD_PATHS]
    ) | st.sampled_from(["after_end", "before_footer", "trailer"])
    regions = st.sampled_from([*PAYLOAD_PATHS, *METADATA_PATHS, "end", "index", "footer"])
    m = Mutation
    return st.one_of(
        tar_fields().map(lambda f: Mutation("tar-field", f.member, f)),
        st.builds(m, layer=st.just("header-frame"), where=members, edit=edits()),
        st.builds(m, layer=st.just("header-encoding"), where=members, encoding=st.sampled_from(sorted(ENCODINGS))),
        st.builds(m, layer=st.just("data-frame"), where=members, edit=edits()),
        st.builds(m, layer=st.just("data-encoding"), where=members, encoding=st.sampled_from(sorted(ENCODINGS))),
        st.builds(m, layer=st.just("padding"), where=payload, edit=edits(8)),
        st.builds(
            m,
            layer=st.just("smuggle"),
            where=payload,
            encoding=st.sampled_from(sorted(SMUGGLE_ENCODINGS)),
            edit=st.sampled_from([None, Edit("truncate")]),  # truncate: the member is signed empty
        ),
        st.builds(m, layer=st.just("insert"), where=places, edit=inserts),
        st.builds(
            m,
            layer=st.just("end-frame"),
            where=st.sampled_from(["1024", "512", "1536", "0", "nonzero"]),
            edit=edits() | st.just(Edit("insert", 0, 0, b"")),
            encoding=st.sampled_from(["", "raw-blocks", "raw-blocks-fcs0", "no-content-size", "two-frames"]),
        ),
        st.builds(m, layer=st.just("index-json"), where=st.just("index"), edit=json_edits(), resigned=st.just(False)),
        st.builds(m, layer=st.just("index-bytes"), where=st.just("index"), edit=edits(), resigned=st.just(False)),
        st.builds(m, layer=st.just("footer"), where=st.just("footer"), edit=edits(8), resigned=st.just(False)),
        st.builds(m, layer=st.just("signed-predicate"), where=st.just("manifest"), edit=json_edits()),
        st.builds(
            m, layer=st.just("signed-statement"), where=st.sampled_from(["statement", "predicate"]), edit=json_edits()
        ),
        st.builds(m, layer=st.just("sha256sums"), where=st.just("SHA256SUMS"), edit=edits()),
        st.builds(
            m,
            layer=st.just("unsigned-json"),
            where=st.sampled_from(["manifest.json", "manifest.dsse.json"]),
            edit=json_edits(),
            resigned=st.just(False),
        ),
        st.builds(
            m,
            layer=st.just("metadata-bytes"),
            where=st.sampled_from(METADATA_PATHS),
            edit=edits(),
            resigned=st.just(False),
        ),
        st.builds(m, layer=st.just("raw"), where=regions, edit=edits(), resigned=st.just(False)),
        st.builds(
            m,
            layer=st.just("attestation"),
            where=st.sampled_from(["provenance-statement", "provenance-envelope", "sigstore-bundle"]),
            edit=json_edits(),
        ).map(lambda x: Mutation(x.layer, x.where, x.edit, resigned=x.where == "provenance-statement")),
        st.builds(
            m,
            layer=st.just("attested-raw"),
            where=st.sampled_from(["members", "index"]),
            edit=edits(),
            resigned=st.just(False),
        ),
    )


@dataclass(frozen=True)
class Base:
    """An untampered kit a mutant is compared against (`kit diff`) and the arguments that verify it."""

    name: str
    data: bytes
    product: str = "demo"
    extra: tuple[str, ...] = field(default=())


def base_for(mutation: Mutation) -> Base:
    if mutation.layer in ATTESTED_LAYERS:
        return Base("attested", attested_kit())
    return Base("plain", plain_kit())
