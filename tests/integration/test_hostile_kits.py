"""The hostile-kit suite: one crafted archive per rule, each refused with its documented exit code,
a one-line error naming what is wrong, and nothing written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from kitbuilder.archive import zstdframes
from tests.factories.crafted import Craft, Member, header
from tests.factories.keys import ed25519_key, write_pair

KEY = ed25519_key("release")
OTHER = ed25519_key("stranger")
GOOD = [Member("docs/a.md", b"alpha\n"), Member("docs/b.sql", b"SELECT 1;\n" * 100)]


def craft(**kwargs: object) -> bytes:
    members = kwargs.pop("members", None) or [Member(m.path, m.data) for m in GOOD]
    return Craft(members=members, key=KEY, **kwargs).build()  # type: ignore[arg-type]


def typed(typeflag: bytes, **extra: object) -> bytes:
    return craft(members=[Member("docs/a.md", b"", raw_header=header("docs/a.md", 0, typeflag=typeflag, **extra))])


def moded(mode: int) -> bytes:
    return craft(members=[Member("docs/a.md", b"x", raw_header=header("docs/a.md", 1, mode=mode))])


def _bomb() -> bytes:
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = stream.compress(bytes(200 << 20)) + stream.flush()  # 200 MiB of zeros for a 1-byte file
    return craft(members=[Member("docs/a.md", b"x", data_frame=frame)])


def _huge_window() -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, write_content_size=False)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = stream.compress(b"x" + bytes(511)) + stream.flush()
    return craft(members=[Member("docs/a.md", b"x", data_frame=frame)])


def _shift_index(index: dict) -> None:  # type: ignore[type-arg]
    index["members"][1]["offset"] += 1


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _swap_payload(statement: dict) -> None:  # type: ignore[type-arg]
    statement["predicate"]["kit"]["sequence"] = 2  # signed bytes then differ from manifest.json


CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    # member safety
    "absolute_path": (lambda: craft(members=[Member("/etc/cron.d/x", b"x")]), 5, "'/etc/cron.d/x' does not match"),
    "dotdot_path": (lambda: craft(members=[Member("docs/../../x", b"x")]), 5, "'docs/../../x' does not match"),
    "dot_slash_path": (lambda: craft(members=[Member("./docs/a.md", b"x")]), 5, "'./docs/a.md' does not match"),
    "symlink_member": (lambda: typed(b"2", linkname=b"/etc/passwd"), 5, "symbolic link"),
    "hardlink_member": (lambda: typed(b"1", linkname=b"docs/b.sql"), 5, "hard link"),
    "char_device": (lambda: typed(b"3"), 5, "character device"),
    "block_device": (lambda: typed(b"4"), 5, "block device"),
    "fifo": (lambda: typed(b"6"), 5, "FIFO"),
    "directory_member": (lambda: typed(b"5"), 5, "directory"),
    "gnu_sparse": (lambda: typed(b"S"), 5, "sparse"),
    "pax_path_override": (lambda: typed(b"x"), 5, "PAX extended header"),
    "pax_global_header": (lambda: typed(b"g"), 5, "PAX global header"),
    "gnu_longname": (lambda: typed(b"L"), 5, "GNU long-name"),
    "old_style_file": (lambda: typed(b"\0"), 5, "old-style"),
    "gnu_magic": (lambda: typed(b"0", magic=b"ustar  \0"), 5, "not a POSIX ustar header"),
    "setuid_mode": (lambda: moded(0o4755), 5, "setuid"),
    "setgid_mode": (lambda: moded(0o2755), 5, "setuid/setgid"),
    "sticky_mode": (lambda: moded(0o1644), 5, "sticky"),
    "world_writable": (lambda: moded(0o666), 5, "world-writable"),
    "bad_header_checksum": (
        lambda: craft(members=[Member("docs/a.md", b"x", raw_header=header("docs/a.md", 1, fix_checksum=False))]),
        5,
        "checksum mismatch",
    ),
    "non_ascii_name": (lambda: craft(members=[Member("docs/caf\u00e9.md", b"x")]), 5, "does not match"),
    "duplicate_name": (
        lambda: craft(members=[Member("docs/a.md", b"x"), Member("docs/a.md", b"x", listed=False, in_index=False)]),
        5,
        "duplicate of docs/a.md",
    ),
    "index_lists_member_twice": (
        lambda: craft(members=[Member("docs/a.md", b"x"), Member("docs/a.md", b"x", listed=False)]),
        5,
        "lists a member twice",
    ),
    "case_collision": (
        lambda: craft(members=[Member("docs/A.md", b"x"), Member("docs/a.md", b"y")]),
        5,
        "duplicate of docs/A.md",
    ),
    "nonzero_padding": (
        lambda: craft(members=[Member("docs/a.md", b"x", padding=b"\x01" * 511)]),
        5,
        "non-zero bytes in tar padding",
    ),
    "short_padding": (lambda: craft(members=[Member("docs/a.md", b"x", padding=b"")]), 5, "tar padding"),
    # stream, index and caps
    "truncated_mid_member": (lambda: _truncate(craft()), 5, "footer"),
    "truncated_footer": (lambda: craft()[:-10], 5, "footer"),
    "trailing_garbage": (lambda: craft() + b"\0" * 7, 5, "footer"),
    "data_after_end_of_archive": (
        lambda: craft(before_index=zstandard.ZstdCompressor().compress(b"evil" * 128)),
        5,
        "after the end of the tar archive",
    ),
    "skippable_frame_in_middle": (
        lambda: craft(extra_frames={1: zstdframes.skippable_frame(0x184D2A50, b"hi")}),
        5,
        "frame",
    ),
    "index_offset_lies": (lambda: craft(index_hook=_shift_index), 5, "differs from the signed manifest"),
    "zstd_bomb": (_bomb, 5, "more than the 512 bytes allowed"),
    "huge_window": (_huge_window, 5, "window"),
    "not_a_kit": (lambda: os.urandom(4096), 5, "footer"),
    "empty_file": (lambda: b"", 5, "not a kit"),
    # integrity against the signed manifest
    "payload_digest_mismatch": (
        lambda: craft(manifest_hook=lambda m: m["files"][0].update(sha256="0" * 64)),
        5,
        "differs from the signed",
    ),
    "payload_size_mismatch": (
        lambda: craft(members=[Member("docs/a.md", b"x" * 10, raw_header=header("docs/a.md", 11))]),
        4,
        "tar header says 11 bytes",
    ),
    "unlisted_member": (
        lambda: craft(members=[*GOOD, Member("docs/extra.sh", b"rm -rf /", listed=False)]),
        4,
        "docs/extra.sh",
    ),
    "unlisted_member_hidden_from_index": (
        lambda: craft(members=[*GOOD, Member("docs/extra.sh", b"rm -rf /", listed=False, in_index=False)]),
        4,
        "not listed in the signed manifest",
    ),
    "missing_member": (lambda: craft(members=[*GOOD, Member("docs/c.md", b"c", in_index=False)]), 4, "docs/c.md"),
    "manifest_not_equal_predicate": (
        lambda: craft(manifest_json_hook=lambda b: b.replace(b'"sequence": 1', b'"sequence": 9')),
        4,
        "differs from the signed predicate",
    ),
    "sha256sums_mismatch": (
        lambda: craft(sums_hook=lambda s: (b"f" if s[:1] != b"f" else b"e") + s[1:]),
        4,
        "SHA256SUMS: differs from the signed manifest at docs/a.md",
    ),
    "sha256sums_not_canonical": (
        lambda: craft(sums_hook=lambda s: s.replace(b"docs/a.md", b"docs/z.md")),
        5,
        "canonical sorted order",
    ),
    # trust and policy
    "statement_altered_after_signing": (lambda: craft(statement_hook=_swap_payload), 4, "predicate"),
    "wrong_payload_type": (lambda: craft(payload_type="text/plain"), 5, "payloadType"),
    "signed_by_untrusted_key": (lambda: Craft(members=list(GOOD), key=OTHER).build(), 3, "0 valid signature(s)"),
    "expired": (lambda: craft(expires="2001-01-01T00:00:00Z"), 6, "expired"),
    "wrong_product": (lambda: craft(product="other"), 6, "product"),
}


def test_suite_has_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_untampered_crafted_kit_verifies(tmp_path: Path) -> None:
    """The factory's unmodified kit passes, so each refusal below comes from its defect."""
    _, pub = write_pair(KEY, tmp_path / "release")
    kit = tmp_path / "good.kit.tar.zst"
    kit.write_bytes(craft())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitbuilder.cli",
            "verify",
            str(kit),
            "--key",
            str(pub),
            "--product",
            "demo",
            "--no-state",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_kit_is_refused(case: str, tmp_path: Path) -> None:
    make, exit_code, words = CASES[case]
    _, pub = write_pair(KEY, tmp_path / "release")
    kit = tmp_path / f"{case}.kit.tar.zst"
    kit.write_bytes(make())
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    extra = ["--max-members", "50"]
    command = [
        sys.executable,
        "-m",
        "kitbuilder.cli",
        "verify",
        str(kit),
        "--key",
        str(pub),
        "--product",
        "demo",
        "--no-state",
        *extra,
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    assert result.returncode == exit_code, f"{case}: exit {result.returncode}: {result.stderr}"
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    assert list(workdir.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == before


def test_too_many_members_is_capped(tmp_path: Path) -> None:
    _, pub = write_pair(KEY, tmp_path / "release")
    kit = tmp_path / "many.kit.tar.zst"
    kit.write_bytes(craft(members=[Member(f"docs/f{n}.md", b"x") for n in range(20)]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitbuilder.cli",
            "verify",
            str(kit),
            "--key",
            str(pub),
            "--max-members",
            "10",
            "--no-state",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 5 and "more than the cap of 10" in result.stderr


def test_apply_of_hostile_kit_writes_nothing(tmp_path: Path) -> None:
    _, pub = write_pair(KEY, tmp_path / "release")
    kit = tmp_path / "evil.kit.tar.zst"
    kit.write_bytes(CASES["symlink_member"][0]())
    db = tmp_path / "site.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitbuilder.cli",
            "apply",
            str(kit),
            "--key",
            str(pub),
            "--db",
            str(db),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--no-state",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 5
    assert not db.exists() and not (tmp_path / "artifacts").exists()
    import tempfile

    assert not [p for p in Path(tempfile.gettempdir()).glob("kit-apply-*") if any(p.rglob("*.md"))], (
        "no staging left with extracted members"
    )
