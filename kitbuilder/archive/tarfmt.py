"""POSIX ustar headers: the only tar form a kit contains, written and checked here.

A kit member is one regular file: a 512-byte ustar header, the data, zero
padding to a 512-byte boundary. Everything else tar can express (links,
devices, FIFOs, directories, sparse files, PAX or GNU extension headers,
setuid/setgid/sticky or world-writable modes, base-256 numbers) is refused by
``parse_header`` with a message naming what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kitbuilder.core import paths
from kitbuilder.errors import ArchiveError

BLOCK = 512
# docs/format.md §2.1: the whole field is octal digits, then only NUL or space padding (always fullmatch:
# `$` would also match before a trailing newline).
_OCTAL_FIELD = re.compile(rb"[0-7]+[\0 ]*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
FILE_MODE = 0o644
END_OF_ARCHIVE = bytes(2 * BLOCK)

_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"x": "a PAX extended header",
    b"g": "a PAX global header",
    b"L": "a GNU long-name header",
    b"K": "a GNU long-link header",
    b"S": "a GNU sparse file",
    b"\0": "an old-style (pre-POSIX) file entry",
}


def padded_size(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def member_size(size: int) -> int:
    """Bytes one member occupies in the tar stream: header, data, padding."""
    return BLOCK + padded_size(size)


def _octal(value: int, width: int) -> bytes:
    text = f"{value:0{width - 1}o}".encode("ascii")
    if len(text) > width - 1:
        raise ValueError(f"{value} does not fit a {width}-byte octal field")
    return text + b"\0"


# The fixed parts of every header kit writes (docs/format.md §2): mode 644, uid and gid 0 (after name, before size);
# type '0', no link, ustar magic, no owner names, device numbers 0 (after the checksum, before the prefix).
_OWNER = _octal(FILE_MODE, 8) + _octal(0, 8) + _octal(0, 8)
_AFTER_CHECKSUM = b"0" + bytes(100) + b"ustar\x0000" + bytes(64) + _octal(0, 8) + _octal(0, 8)
# The checksum of every header counts these fixed bytes and the checksum field as eight spaces; only the name,
# prefix, size and mtime vary (their padding is NUL, which adds nothing).
_FIXED_SUM = sum(_OWNER) + sum(_AFTER_CHECKSUM) + 8 * 32
_TAIL_NO_PREFIX = _AFTER_CHECKSUM + bytes(155 + 12)
_OCTAL_11 = 8**11  # the numbers an 11-digit octal field holds


def build_header(path: str, size: int, mtime: int) -> bytes:
    """The ustar header of a regular file with fixed owner and mode (reproducible).

    Built from bytes concatenation, not field by field: it runs once per member in build and verify.
    """
    if len(path) <= 100 and 0 <= size < _OCTAL_11 and 0 <= mtime < _OCTAL_11:
        # The common header (no prefix, both numbers fit): one formatting step each, the tail a constant.
        name_bytes = path.encode("ascii")
        numbers = b"%011o\0%011o\0" % (size, mtime)
        checksum = _FIXED_SUM + sum(name_bytes) + sum(numbers)
        return b"".join((name_bytes.ljust(100, b"\0"), _OWNER, numbers, b"%06o\0 " % checksum, _TAIL_NO_PREFIX))
    split = paths.ustar_split(path)
    if split is None:
        raise ValueError(f"{path} does not fit a ustar header")
    prefix, name = split
    name_bytes, prefix_bytes = name.encode("ascii"), prefix.encode("ascii")
    numbers = _octal(size, 12) + _octal(mtime, 12)
    checksum = _FIXED_SUM + sum(name_bytes) + sum(prefix_bytes) + sum(numbers)
    head = name_bytes.ljust(100, b"\0") + _OWNER + numbers
    tail = _AFTER_CHECKSUM + prefix_bytes.ljust(155, b"\0") + bytes(12)
    return head + f"{checksum:06o}".encode("ascii") + b"\0 " + tail


@dataclass(frozen=True)
class MemberHeader:
    path: str
    size: int
    mode: int
    mtime: int


def _field(block: bytes, offset: int, width: int) -> bytes:
    return block[offset : offset + width].split(b"\0", 1)[0]


def _number(block: bytes, offset: int, width: int, what: str, where: str) -> int:
    """An octal field exactly as the writer makes it: digits, then NUL/space padding.

    Anything else is refused, not interpreted: GNU tar, for one, skips a leading NUL and
    reads the digits after it, so a lenient reader here would check a different size or
    mode than `tar -x` applies.
    """
    raw = block[offset : offset + width]
    if raw[0] & 0x80:
        raise ArchiveError(f"{where}: {what} uses base-256 encoding, which kits never use")
    if _OCTAL_FIELD.fullmatch(raw) is None:
        raise ArchiveError(f"{where}: {what} field is not octal digits as kits write them ({raw!r})")
    return int(raw.rstrip(b"\0 "), 8)


def _shown(text: str) -> str:
    """A member name as it may appear in a one-line message: control characters escaped."""
    return text if _PRINTABLE.fullmatch(text) is not None else text.encode("unicode_escape").decode("ascii")


def parse_header(block: bytes, *, offset: int, where: str | None = None) -> MemberHeader:
    """Check one 512-byte header against every member rule; ArchiveError names the offence.

    ``offset`` is the header's offset in the tar stream, named in errors found before the path is
    known; a reader that seeks to a member (and so does not know it) passes ``where`` instead.
    """
    where = where or f"tar header at stream offset {offset}"
    if len(block) != BLOCK:
        raise ArchiveError(f"{where}: truncated header")
    stored = _number(block, 148, 8, "checksum", where)
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise ArchiveError(f"{where}: header checksum mismatch (corrupt or crafted header)")
    name = _field(block, 0, 100)
    prefix = _field(block, 345, 155)
    try:
        path = ((prefix + b"/" + name) if prefix else name).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{where}: member name is not ASCII ({name!r})") from exc
    where = f"member {_shown(path)}"
    typeflag = block[156:157]
    if typeflag in _TYPE_NAMES:
        raise ArchiveError(f"{where}: is {_TYPE_NAMES[typeflag]}; kits contain regular files only")
    if typeflag != b"0":
        raise ArchiveError(f"{where}: unknown tar type {typeflag!r}; kits contain regular files only")
    if block[257:265] != b"ustar\x0000":
        raise ArchiveError(f"{where}: not a POSIX ustar header (magic {block[257:265]!r})")
    if _field(block, 157, 100):
        raise ArchiveError(f"{where}: regular file with a link target")
    problem = paths.problem_with(path)
    if problem:
        raise ArchiveError(f"{where}: unsafe path: {problem}")
    mode = _number(block, 100, 8, "mode", where)
    if mode & 0o7000:
        raise ArchiveError(f"{where}: mode {mode:o} sets setuid/setgid/sticky bits")
    if mode & 0o002:
        raise ArchiveError(f"{where}: mode {mode:o} is world-writable")
    if mode & ~0o777:
        raise ArchiveError(f"{where}: mode {mode:o} has bits outside 0777")
    size = _number(block, 124, 12, "size", where)
    mtime = _number(block, 136, 12, "mtime", where)
    # The header frame is not signed (docs/format.md §1.1): whatever `tar -x` applies from it must be what
    # the writer writes, or anyone could change a verified kit's extracted files. Mode, owner ids and owner
    # names: root's `tar -x` restores them (names first), so an unsigned "nobody" or uid 1000 would hand the
    # extracted files to that user. mtime is bound to the signed build.mtime by the member reader.
    if mode != FILE_MODE:
        raise ArchiveError(f"{where}: mode {mode:o}, kits write {FILE_MODE:o} (the header is not signed)")
    for what, offset in (("uid", 108), ("gid", 116)):
        value = _number(block, offset, 8, what, where)
        if value != 0:
            raise ArchiveError(f"{where}: {what} {value}, kits write 0 (the header is not signed)")
    for what, offset in (("owner name (uname)", 265), ("group name (gname)", 297)):
        if any(block[offset : offset + 32]):
            shown = _field(block, offset, 32).decode("ascii", "backslashreplace")
            raise ArchiveError(f"{where}: {what} {_shown(shown)!r}, kits write none (the header is not signed)")
    return MemberHeader(path=path, size=size, mode=mode, mtime=mtime)
