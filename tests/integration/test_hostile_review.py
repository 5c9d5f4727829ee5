"""Findings of an adversarial pass over verify, inspect, diff, sbom, images export and build, one test per defect.

Each case is a hostile input nobody listed in the first review: what anyone can do to a kit (or the files
beside it) without a key, and what a spec's author or a local user can do to a build. Every case asserts the
fail-closed behaviour: the documented exit code, exactly one line on stderr, no traceback, nothing written
outside the target and, for resource cases, peak RSS under 150 MiB measured in a child process.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from kitbuilder.archive import zstdframes
from kitbuilder.core.manifest import SHA256SUMS, SIGSTORE_BUNDLE
from tests.conftest import KitEnv, run_kit
from tests.factories.kits import rewrite_kit
from tests.integration.test_hostile_parse import assert_refused, assert_refused_cheaply, run_measured

MiB = 1 << 20
BUILD_MTIME = 1700000000  # SOURCE_DATE_EPOCH of the ``built_kit`` fixture


# ---------------------------------------------------------------------------------------------------------------
# unsigned tar header fields that `tar -x` applies


def _index(data: bytes) -> dict[str, dict[str, int | str]]:
    offset = zstdframes.parse_footer(data[-zstdframes.FOOTER_SIZE :])
    index = json.loads(data[offset + 8 : -zstdframes.FOOTER_SIZE])
    return {entry["path"]: entry for entry in index["members"]}


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode("ascii") + b"\0 "
    return bytes(block)


def rewrite_header(kit: Path, out: Path, member: str, variants: list[dict[int, bytes]]) -> Path:
    """``kit`` with ``member``'s header frame re-encoded with one of ``variants`` (offset -> bytes) applied.

    The header frame is not signed (only its position is): the new frame must keep the compressed length,
    so levels, checksum and content-size flags, and the given variants are tried until one fits.
    """
    data = bytearray(kit.read_bytes())
    entry = _index(bytes(data))[member]
    start, length = int(entry["offset"]), int(entry["length"])
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    header = decompressor.decompress(bytes(data[start : start + length]))[:512]
    frame_length = length - len(decompressor.unused_data)
    for variant in variants:
        block = bytearray(header)
        for offset, value in variant.items():
            block[offset : offset + len(value)] = value
        new = _checksummed(block)
        for level, checksum, size in itertools.product(range(1, 20), (False, True), (False, True)):
            compressor = zstandard.ZstdCompressor(level=level, write_checksum=checksum, write_content_size=size)
            frame = compressor.compress(new)
            if len(frame) == frame_length:
                data[start : start + frame_length] = frame
                out.write_bytes(bytes(data))
                return out
    raise AssertionError(f"no variant of {member}'s header compresses to {frame_length} bytes")


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _name(text: str) -> bytes:
    return text.encode("ascii").ljust(32, b"\0")


# Each: what changes in the header (several equivalent tries, so one fits the frame's length), and the words
# of the refusal. Every one of them is applied by `tar -x` (as root: owner names first, then ids).
HEADER_FIELDS: dict[str, tuple[list[dict[int, bytes]], str]] = {
    "executable_mode": ([{100: _octal(m, 8)} for m in (0o755, 0o744, 0o654, 0o640, 0o600)], "kits write 644"),
    "owner_uid": ([{108: _octal(u, 8)} for u in (1000, 1001, 65534, 7, 77)], "uid"),
    "owner_gid": ([{116: _octal(g, 8)} for g in (1000, 1001, 65534, 7, 77)], "gid"),
    "owner_name": ([{265: _name(n)} for n in ("nobody", "daemon", "bin", "mail", "games")], "uname"),
    "group_name": ([{297: _name(n)} for n in ("nogroup", "daemon", "bin", "mail", "users")], "gname"),
    "mtime_not_the_signed_one": (
        [{136: _octal(BUILD_MTIME + d, 12)} for d in (1, 2, 3, 4, 8, 64, 256, 4096, -1, -256)],
        "mtime",
    ),
}


def _tar_listing(kit: Path) -> str:
    zstd = subprocess.run(["zstd", "-dc", str(kit)], capture_output=True, check=True)
    return subprocess.run(["tar", "-tv", "--full-time"], input=zstd.stdout, capture_output=True, check=True).stdout.decode()


@pytest.mark.skipif(shutil.which("zstd") is None or shutil.which("tar") is None, reason="needs zstd and tar")
@pytest.mark.parametrize("field", sorted(HEADER_FIELDS))
@pytest.mark.parametrize("member", ["docs/operator/RUNBOOK.md", SHA256SUMS])
def test_unsigned_header_field_that_tar_applies_is_refused(
    kit_env: KitEnv, built_kit: Path, field: str, member: str
) -> None:
    """A header frame re-encoded with another mode, owner or mtime: what `tar -x` would apply, not what was signed.

    Verify said OK while `zstd -dc KIT | tar -x` as root made the file executable or owned by another
    user (who could then change a verified file).
    """
    variants, words = HEADER_FIELDS[field]
    hostile = rewrite_header(built_kit, kit_env.root / "hostile.kit.tar.zst", member, variants)
    listing = _tar_listing(hostile)
    assert listing != _tar_listing(built_kit)  # stock tar sees the change
    stderr = assert_refused(run_kit("verify", hostile, "--key", kit_env.ed_pub), 5, member, words)
    assert stderr.startswith("kit: archive error: ")
