"""zstd frame encodings as a class, through every command that reads members (docs/format.md §1.5).

Each encoding in ``hostile.frame_encodings`` is put where a member's data frame goes, in a kit that is
validly signed (the frame digest signs the hostile frame itself), and run through:

- ``kit verify``: exit 0 only for an encoding that decodes, as stock ``zstd -dc`` decodes it, to the signed
  bytes, and then ``zstd -dc KIT | tar -x`` yields exactly the verified files; otherwise the documented
  exit code, one line on stderr, nothing written;
- ``kit inspect``: the same encodings as the frame of ``manifest.json`` (read by seeking, not by the scan);
- the member reader's every entry point (``read_member``, ``read_member_to``, ``member_chunks`` for images
  export and push, ``data_frame_source`` for delta and patch copies, ``scan``): one verdict per encoding;
- ``kit patch``: a signed base kit holding the encoding, a valid delta that copies that member from it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.archive import reader
from kitbuilder.archive.reader import Caps
from kitbuilder.errors import KitError
from tests.factories.cli import run_kit
from tests.factories.hostile import (
    RELEASE,
    Member,
    frame_encodings,
    good_members,
    hidden_member,
    kit,
    padding_for,
)
from tests.factories.keys import write_pair

CONTENT = b"x" * 600  # padded to 1024: the frame must decode to CONTENT + 424 zero bytes
NAMES = sorted(frame_encodings(CONTENT + padding_for(CONTENT), hidden_member()))

# The exit code of each encoding the verifier refuses (docs/exit-codes.md): 5, a malformed archive, except
# where the frame decodes cleanly to too little data for the signed size (4, not the signed content).
REFUSED_WITH = {"two_frames": 4}


def _case(name: str) -> tuple[bytes, bytes, bool]:
    """(member content, data frame, acceptable) for encoding ``name``."""
    content = b"" if name.startswith("empty_") else CONTENT
    frame, acceptable = frame_encodings(CONTENT + padding_for(CONTENT), hidden_member())[name]
    return content, frame, acceptable


def _kit_with(name: str) -> bytes:
    content, frame, _ = _case(name)
    return kit(Member("docs/x.md", content, data_frame=frame))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(RELEASE, tmp_path / "release")


def _one_line_error(stderr: str, code: int) -> None:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert "Traceback" not in stderr
    kind = {2: "usage", 4: "integrity", 5: "archive"}[code]
    assert stderr.startswith(f"kit: {kind} error: "), stderr


def _stock_extract(kit_path: Path, into: Path) -> dict[str, bytes] | None:
    """What `zstd -dc KIT | tar -x` yields (None when either fails)."""
    into.mkdir()
    zstd = subprocess.run(["zstd", "-dc", "-q", str(kit_path)], capture_output=True)
    if zstd.returncode != 0:
        return None
    tar = subprocess.run(["tar", "-x", "-C", str(into)], input=zstd.stdout, capture_output=True)
    if tar.returncode != 0:
        return None
    return {str(p.relative_to(into)): p.read_bytes() for p in sorted(into.rglob("*")) if p.is_file()}


def _signed_files(content: bytes) -> dict[str, bytes]:
    return {m.path: m.data for m in good_members()} | {"docs/x.md": content}


@pytest.mark.parametrize("name", NAMES)
def test_verify_accepts_a_frame_only_if_stock_tools_extract_the_verified_files(
    name: str, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    content, _, acceptable = _case(name)
    kit_path = tmp_path / "hostile.kit.tar.zst"
    kit_path.write_bytes(_kit_with(name))
    work = tmp_path / "cwd"
    work.mkdir()
    before = sorted(tmp_path.rglob("*"))
    result = run_kit("verify", kit_path, "--key", keys[1], "--product", "demo")
    if acceptable:
        assert result.exit_code == 0, result.stderr
        extracted = _stock_extract(kit_path, tmp_path / "out")
        assert extracted is not None, "kit verify accepted a kit that zstd -dc | tar -x cannot extract"
        metadata = {"SHA256SUMS", "SHA256SUMS.sig", "manifest.json", "manifest.dsse.json"}
        assert {k: v for k, v in extracted.items() if k not in metadata} == _signed_files(content)
    else:
        code = REFUSED_WITH.get(name, 5)
        assert result.exit_code == code, f"{name}: exit {result.exit_code}: {result.stderr}"
        _one_line_error(result.stderr, code)
        assert "docs/x.md" in result.stderr or "offset" in result.stderr, result.stderr
        assert result.stdout == ""
        assert sorted(tmp_path.rglob("*")) == before, "verify wrote something"
        extracted = _stock_extract(kit_path, tmp_path / "out")
        # What kit refused, stock tools do not extract as the signed files either (or kit is stricter: the
        # encodings zstd accepts but kits never contain, which it refuses by rule, not by guessing).
        if extracted is not None and name not in ("window_over_cap", "two_frames", "skippable_frame_after_frame"):
            assert extracted.get("docs/x.md") != content or "docs/evil.sh" in extracted


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("empty_")])
def test_inspect_reads_metadata_frames_by_the_same_rules(name: str, tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """manifest.json's frame in each encoding: `kit inspect` (which seeks to it) accepts exactly the acceptable ones."""

    def reencode(member: Member) -> None:
        if member.path == "manifest.json":
            member.data_frame = frame_encodings(member.data + padding_for(member.data), hidden_member())[name][0]

    _, _, acceptable = _case(name)
    kit_path = tmp_path / "meta.kit.tar.zst"
    kit_path.write_bytes(kit(metadata_hook=reencode))
    result = run_kit("inspect", kit_path, "--key", keys[1])
    if acceptable:
        assert result.exit_code == 0, result.stderr
    else:
        code = REFUSED_WITH.get(name, 5)
        assert result.exit_code == code, f"{name}: exit {result.exit_code}: {result.stderr}"
        _one_line_error(result.stderr, code)
        assert "manifest.json" in result.stderr


def _verdict(call: object) -> tuple[str, bytes]:
    """('ok', bytes) or (exit code and error class, b'') for one reader call."""
    assert callable(call)
    try:
        return "ok", call()
    except KitError as exc:
        assert "\n" not in str(exc)
        return f"{exc.exit_code} {type(exc).__name__}", b""


@pytest.mark.parametrize("name", NAMES)
def test_every_member_reader_gives_one_verdict(name: str, tmp_path: Path) -> None:
    """read_member, read_member_to, member_chunks, data_frame_source and the scan agree on each encoding."""
    content, _, acceptable = _case(name)
    data = _kit_with(name)
    caps = Caps()
    stream = io.BytesIO(data)
    location = reader.read_index(stream, caps)
    entry = location.index.by_path()["docs/x.md"]

    def to_file() -> bytes:
        target = tmp_path / f"member-{len(list(tmp_path.iterdir()))}"
        digest = reader.read_member_to(stream, entry, caps, target)
        assert digest == hashlib.sha256(target.read_bytes()).hexdigest()
        return target.read_bytes()

    def copy() -> bytes:
        source, length, digest = reader.data_frame_source(stream, entry, caps)
        copied = b""
        while len(copied) < length:
            piece = source.read(min(1 << 20, length - len(copied)))
            assert piece, "the source ended inside the frame"
            copied += piece
        assert digest.hexdigest() == entry.frame_sha256
        assert copied == data[entry.offset + entry.length - length : entry.offset + entry.length]
        return content  # a verbatim copy: what it decodes to was checked on the way

    def scan() -> bytes:
        expected = {
            e.path: reader.Expected(e.path, e.size, e.sha256, e.offset, e.length, e.frame_sha256)
            for e in location.index.members
        }
        reader.scan(io.BytesIO(data), expected=expected, location=location, caps=caps)
        return content

    verdicts = {
        "read_member": _verdict(lambda: reader.read_member(stream, entry, caps)),
        "read_member_to": _verdict(to_file),
        "member_chunks": _verdict(lambda: b"".join(reader.member_chunks(stream, entry, caps, against="signed"))),
        "data_frame_source": _verdict(copy),
    }
    # The scan reads the stream, where bytes after a frame are the next frame's problem; the others seek.
    scanned = _verdict(scan)
    if acceptable:
        assert set(verdicts.values()) == {("ok", content)}, verdicts
        assert scanned == ("ok", content)
    else:
        assert len(set(verdicts.values())) == 1, verdicts
        (verdict,) = set(verdicts.values())
        assert verdict[0] != "ok", verdicts
        assert scanned[0] != "ok"


def _target_spec(root: Path, content: bytes, *, sequence: int = 2) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "x.md").write_bytes(content)
    (root / "src" / "runbook.md").write_bytes(b"# A file the delta ships\n")
    spec = root / "kit.yaml"
    spec.write_text(
        f"apiVersion: kitbuilder/v1\nname: hostile-kit\nversion: '{sequence}.0.0'\nsequence: {sequence}\n"
        "expires: '2099-01-01T00:00:00Z'\nproduct: demo\nchannel: stable\ndescription: target\n"
        "docs:\n  - id: docs\n    source: src\n"
    )
    return spec


def _one_line_format1_refusal(result: Any, what: str) -> None:
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.stderr}"
    _one_line_error(result.stderr, 2)
    assert "format-1 kit" in result.stderr and what in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["writer_frame", "content_size_absent_raw", *(n for n in NAMES if "fcs0" in n)])
def test_patch_from_a_format1_base_holding_a_hostile_frame_is_refused(
    name: str, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """Format 2: kit patch copies base frames by the target's signed frame digests, so only a format-2 base's
    frames can be reused; a format-1 base (here one holding a hostile data frame) is refused before anything
    is copied or written: exit 2, one line, no output. (Format 1 patched by decoding each copied frame.)"""
    content, frame, _ = _case(name)
    base = tmp_path / "base.kit.tar.zst"
    base.write_bytes(kit(Member("docs/x.md", content, data_frame=frame)))
    genuine = tmp_path / "genuine.kit.tar.zst"
    built = run_kit("build", _target_spec(tmp_path / "g", content, sequence=1), "--key", keys[0], "--out", genuine)
    assert built.exit_code == 0, built.stderr
    delta_path = tmp_path / "delta.kit.tar.zst"
    built = run_kit(
        "build", _target_spec(tmp_path / "t", content), "--key", keys[0], "--delta-from", genuine, "--out", delta_path
    )
    assert built.exit_code == 0, built.stderr
    out = tmp_path / "new.kit.tar.zst"
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_line_format1_refusal(run_kit("patch", base, delta_path, "--key", keys[1], "--out", out), str(base))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", [n for n in NAMES if "fcs0" in n])
def test_delta_build_from_a_format1_base_holding_a_hostile_frame_is_refused(
    name: str, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """`kit build --delta-from BASE` reuses frames of format-2 bases only: a format-1 base (here one holding a
    frame that does not decode) is refused, exit 2, one line, nothing written."""
    content, frame, _ = _case(name)
    base = tmp_path / "base.kit.tar.zst"
    base.write_bytes(kit(Member("docs/x.md", content, data_frame=frame)))
    out = tmp_path / "delta.kit.tar.zst"
    result = run_kit(
        "build", _target_spec(tmp_path / "t", content), "--key", keys[0], "--delta-from", base, "--out", out
    )
    _one_line_format1_refusal(result, str(base))
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"base.kit.tar.zst", "t", "release.key", "release.pub"}


def test_zstd_and_tar_are_installed() -> None:
    """The cross-checks above need the stock tools; skipping them would hide the property under test."""
    assert shutil.which("zstd") and shutil.which("tar")
