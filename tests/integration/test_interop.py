"""Every artefact checks out with tools nobody here wrote: zstd, tar, sha256sum, openssl, securesystemslib."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from tests.factories.cli import KitEnv, run_kit

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("zstd", "tar", "sha256sum", "openssl")),
    reason="needs zstd, tar, sha256sum and openssl on PATH",
)


@pytest.fixture
def extracted(built_kit: Path, tmp_path: Path) -> Path:
    target = tmp_path / "extracted"
    target.mkdir()
    subprocess.run(f"zstd -dc '{built_kit}' | tar -x -C '{target}'", shell=True, check=True)
    return target


def test_stock_zstd_and_tar_extract_every_member(extracted: Path) -> None:
    names = sorted(p.relative_to(extracted).as_posix() for p in extracted.rglob("*") if p.is_file())
    assert "manifest.json" in names and "SHA256SUMS" in names and "docs/operator/blob.bin" in names
    # Format 2: the signed file list names every payload file, one JSON object per line.
    listed = [json.loads(line) for line in (extracted / "manifest.files.jsonl").read_text().splitlines()]
    assert {f["path"] for f in listed} | {
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "manifest.files.jsonl",
        "manifest.json",
        "manifest.dsse.json",
        "attestations/provenance.dsse.json",
    } == set(names)


def test_zstd_test_mode_accepts_the_whole_file(built_kit: Path) -> None:
    subprocess.run(["zstd", "-tq", str(built_kit)], check=True)


def test_tar_lists_only_regular_files(built_kit: Path) -> None:
    listing = subprocess.run(
        f"zstd -dc '{built_kit}' | tar -tv", shell=True, check=True, capture_output=True, text=True
    ).stdout
    assert listing and all(line.startswith("-rw-r--r--") for line in listing.splitlines())


def test_sha256sum_strict_check_passes(extracted: Path) -> None:
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=extracted, check=True)


def test_openssl_verifies_ed25519_checksum_signature(extracted: Path, kit_env: KitEnv) -> None:
    # The first --key (ed25519) made SHA256SUMS.sig.
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(kit_env.ed_pub),
            "-rawin",
            "-in",
            "SHA256SUMS",
            "-sigfile",
            "SHA256SUMS.sig",
        ],
        cwd=extracted,
        check=True,
        capture_output=True,
    )


def test_openssl_verifies_ecdsa_checksum_signature(kit_env: KitEnv, tmp_path: Path) -> None:
    from tests.factories.cli import run_kit

    kit = tmp_path / "ec.kit.tar.zst"
    assert run_kit("build", kit_env.spec, "--key", kit_env.ec_key, "--out", kit).exit_code == 0
    target = tmp_path / "ec"
    target.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}'", shell=True, check=True)
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(kit_env.ec_pub), "-signature", "SHA256SUMS.sig", "SHA256SUMS"],
        cwd=target,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Verified OK" in out.stdout
    (target / "SHA256SUMS").write_text((target / "SHA256SUMS").read_text() + "0" * 64 + "  extra\n")
    tampered = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(kit_env.ec_pub), "-signature", "SHA256SUMS.sig", "SHA256SUMS"],
        cwd=target,
        capture_output=True,
        text=True,
    )
    assert tampered.returncode != 0


def _sslib_key(pub: Path) -> SSlibKey:
    from kitbuilder.ops.trust_inputs import load_public

    ours = load_public(pub)
    public = serialization.load_pem_public_key(pub.read_bytes())
    return SSlibKey.from_crypto(public, keyid=ours.keyid)  # type: ignore[arg-type]


def test_securesystemslib_verifies_manifest_envelope(extracted: Path, kit_env: KitEnv) -> None:
    document = json.loads((extracted / "manifest.dsse.json").read_text())
    envelope = SslibEnvelope.from_dict(document)
    keys = [_sslib_key(kit_env.ed_pub), _sslib_key(kit_env.ec_pub)]
    accepted = envelope.verify(keys, 2)
    assert len(accepted) == 2
    statement = json.loads(base64.b64decode(document["payload"]))
    assert statement["predicate"] == json.loads((extracted / "manifest.json").read_text())


def test_securesystemslib_rejects_a_tampered_payload(extracted: Path, kit_env: KitEnv) -> None:
    from securesystemslib.exceptions import VerificationError

    document = json.loads((extracted / "manifest.dsse.json").read_text())
    statement = json.loads(base64.b64decode(document["payload"]))
    statement["predicate"]["kit"]["sequence"] = 99
    document["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError):
        SslibEnvelope.from_dict(document).verify([_sslib_key(kit_env.ed_pub)], 1)


def test_in_toto_attestation_parses_the_statement(extracted: Path) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2

    document = json.loads((extracted / "manifest.dsse.json").read_text())
    payload = base64.b64decode(document["payload"])
    parsed = json_format.Parse(payload, statement_pb2.Statement())
    assert parsed.predicate_type == "https://kitbuilder.dev/manifest/v1"
    subjects = {s.name: s.digest["sha256"] for s in parsed.subject}
    # Format 2: two subjects, the signed file list and SHA256SUMS, by the digests of the extracted files.
    assert subjects == {
        name: hashlib.sha256((extracted / name).read_bytes()).hexdigest()
        for name in ("manifest.files.jsonl", "SHA256SUMS")
    }


def test_python_tarfile_reads_the_same_members(built_kit: Path) -> None:
    import io
    import tarfile

    import zstandard

    with built_kit.open("rb") as handle:
        data = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 for m in members)
    assert len(members) == 13  # 6 inputs, the kit SBOM, 5 metadata members, the provenance attestation


def test_incompressible_members_are_stored_raw_and_stock_tools_read_them(kit_env: KitEnv, tmp_path: Path) -> None:
    """Data that zstd cannot shrink goes into raw blocks (no compressor CPU); any zstd decoder reads them."""
    import os

    from kitbuilder.archive.index import MemberSpan
    from kitbuilder.archive.reader import Caps
    from kitbuilder.ops.kitfile import located_index

    (kit_env.root / "src/docs/random.bin").write_bytes(os.urandom(3 << 20))
    (kit_env.root / "src/docs/text.log").write_bytes(b"the same line again\n" * 200_000)
    kit = kit_env.kit()
    assert run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    with kit.open("rb") as stream:
        entries = located_index(stream, Caps()).by_path()
    random_entry, text_entry = entries["docs/operator/random.bin"], entries["docs/operator/text.log"]
    assert isinstance(random_entry, MemberSpan) and isinstance(text_entry, MemberSpan)
    # Format 2: a small compressed header frame, then one raw data frame (3 MiB is under a 4 MiB chunk): a
    # 14-byte frame header and a 3-byte header per 128 KiB block.
    header, data = random_entry.frames
    assert 0 < header.length < 200 and header.size == 512
    assert data.length == (3 << 20) + 14 + 3 * 24
    assert sum(f.length for f in text_entry.frames) < 100_000  # compressible data is still compressed
    subprocess.run(["zstd", "-tq", str(kit)], check=True)
    target = tmp_path / "out"
    target.mkdir()
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}'", shell=True, check=True)
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=target, check=True)
    assert run_kit("verify", kit, "--key", kit_env.ed_pub).exit_code == 0
