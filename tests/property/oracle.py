"""What a mutant kit may and may not do to `kit`, checked from the outside.

The CLI runs in process (click's runner, exceptions not caught, so a crash is seen as
one), with its own anti-rollback state. When `kit verify` accepts a kit, stock
`zstd -dc KIT | tar -x` must give exactly the files it verified: the members of the
index, with the sizes and SHA-256 the index states, the payload ones listed in a
statement that the trusted key really signed (checked here with `cryptography`
and DSSE's PAE, not with kit's code), and manifest.json equal to its predicate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from kitbuilder.cli import main
from tests.factories.hostile import RELEASE
from tests.factories.mutate import pae

METADATA = frozenset(
    {
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "manifest.files.jsonl",
        "manifest.json",
        "manifest.dsse.json",
        "SHA256SUMS.sigstore.json",
    }
)


@dataclass(frozen=True)
class Outcome:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    crash: str | None = None  # the traceback of an exception that escaped the CLI

    def problems(self) -> list[str]:
        """Breaches of the CLI contract (docs/exit-codes.md) whatever the input."""
        if self.crash is not None:
            return [f"{self.command}: exception escaped the CLI: {self.crash.strip().splitlines()[-1]}"]
        found = []
        if self.exit_code == 70:
            found.append(f"{self.command}: exit 70 (internal error): {self.stderr.strip()}")
        elif self.exit_code == 1:
            found.append(f"{self.command}: exit 1: {self.stderr.strip()[-300:]}")
        if "Traceback" in self.stderr:
            found.append(f"{self.command}: traceback on stderr")
        if self.exit_code != 0 and (not self.stderr.endswith("\n") or self.stderr.count("\n") != 1):
            found.append(f"{self.command}: exit {self.exit_code} with stderr not one line: {self.stderr[:300]!r}")
        return found


def run(*args: str, state: Path) -> Outcome:
    runner = CliRunner()
    env = {"KIT_STATE_DIR": str(state), "KIT_DEBUG": ""}
    try:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    except Exception:  # noqa: BLE001 - an escaped exception is exactly what is being looked for
        return Outcome(args[0], -1, "", "", crash=traceback.format_exc())
    return Outcome(args[0], result.exit_code, result.stdout, result.stderr)


def stock_tools() -> bool:
    return shutil.which("zstd") is not None and shutil.which("tar") is not None


def extract_with_stock_tools(kit: Path, into: Path) -> tuple[list[str], dict[str, bytes]]:
    """`zstd -dc KIT | tar -x -C INTO`: (problems, regular files by relative path)."""
    problems: list[str] = []
    into.mkdir()
    env = {**os.environ, "LC_ALL": "C"}
    with subprocess.Popen(["zstd", "-dc", "--", str(kit)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as zstd:
        tar = subprocess.run(
            ["tar", "-x", "--no-same-owner", "--no-same-permissions", "-f", "-", "-C", str(into)],
            stdin=zstd.stdout,
            capture_output=True,
            env=env,
        )
        assert zstd.stdout is not None and zstd.stderr is not None
        zstd.stdout.close()
        zstd_err = zstd.stderr.read()
    if zstd.returncode != 0:
        problems.append(f"zstd -dc exits {zstd.returncode}: {zstd_err.decode(errors='replace').strip()}")
    # A warning alone (a time stamp in the future) does not change what is extracted; the files are compared below.
    if tar.returncode != 0:
        problems.append(f"tar -x exits {tar.returncode}: {tar.stderr.decode(errors='replace').strip()}")
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(into):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = str(path.relative_to(into))
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                files[relative] = path.read_bytes()
            elif not stat.S_ISDIR(mode):
                problems.append(f"tar -x made {relative}, which is not a regular file (mode {mode:o})")
    return problems, files


def index_listing(data: bytes) -> dict[str, dict[str, Any]]:
    """The members the kit's index names (the listing a passing verify vouches for), parsed independently."""
    index_offset = int.from_bytes(data[-8:], "little")
    size = int.from_bytes(data[index_offset + 4 : index_offset + 8], "little")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), f"duplicate key in the index: {pairs}"
        return dict(pairs)

    document = json.loads(data[index_offset + 8 : index_offset + 8 + size], object_pairs_hook=no_duplicates)
    listing = {member["path"]: member for member in document["members"]}
    assert len(listing) == len(document["members"]), "a path twice in the index"
    return listing


def acceptance_problems(data: bytes, kit: Path) -> list[str]:
    """Why `kit verify` should not have accepted ``data`` (empty when stock tools agree with it)."""
    with tempfile.TemporaryDirectory() as tmp:
        problems, files = extract_with_stock_tools(kit, Path(tmp) / "out")
    try:
        listing = index_listing(data)
        # Format 2: the index lists the metadata members; the signed file list (checked against the signature
        # below) lists the payload files.
        if "manifest.files.jsonl" in files:
            for line in files["manifest.files.jsonl"].splitlines():
                entry = json.loads(line)
                assert entry["path"] not in listing, f"{entry['path']} twice in the index and the file list"
                listing[entry["path"]] = entry
    except (AssertionError, ValueError, KeyError, TypeError, IndexError) as exc:
        return [*problems, f"the accepted kit's index does not parse: {exc}"]
    if set(files) != set(listing):
        problems.append(
            f"tar extracted {sorted(set(files) - set(listing))} beyond the verified members and is missing "
            f"{sorted(set(listing) - set(files))}"
        )
    for path in sorted(set(files) & set(listing)):
        entry, content = listing[path], files[path]
        if len(content) != entry.get("size") or hashlib.sha256(content).hexdigest() != entry.get("sha256"):
            problems.append(f"{path}: tar extracted {len(content)} bytes that are not what verify checked")
    problems += _signature_problems(files)
    return problems


def _signature_problems(files: dict[str, bytes]) -> list[str]:
    """The extracted payload is what the trusted key signed, checked without kit's code."""
    try:
        envelope = json.loads(files["manifest.dsse.json"])
        payload = base64.b64decode(envelope["payload"], validate=True)
        message = pae(envelope["payloadType"], payload)
        public = RELEASE.key.public_key()
        assert isinstance(public, ed25519.Ed25519PublicKey), "the trusted test key is Ed25519"
        valid = False
        for signature in envelope["signatures"]:
            try:
                public.verify(base64.b64decode(signature["sig"]), message)
                valid = True
            except (InvalidSignature, ValueError, TypeError, KeyError):  # not this signature
                continue
        if not valid:
            return ["manifest.dsse.json carries no valid signature by the trusted key"]
        statement = json.loads(payload)
        predicate = statement["predicate"]
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        if "fileList" in predicate:
            # Format 2: the statement signs the file list by digest; the list names every payload file.
            listed = files["manifest.files.jsonl"]
            assert subjects["manifest.files.jsonl"] == hashlib.sha256(listed).hexdigest(), "file list not signed"
            assert predicate["fileList"]["sha256"] == subjects["manifest.files.jsonl"], "fileList digest differs"
            entries = [json.loads(line) for line in listed.splitlines()]
            signed = {f["path"]: f["sha256"] for f in entries}
            subjects.update(signed)
        else:
            signed = {f["path"]: f["sha256"] for f in predicate["files"]}
    except Exception as exc:  # noqa: BLE001 - an accepted kit whose signed metadata a plain reader cannot read
        return [f"the accepted kit's signed metadata does not read: {type(exc).__name__}: {exc}"]
    problems = []
    payload_files = {p: c for p, c in files.items() if p not in METADATA and not p.startswith("attestations/")}
    if set(payload_files) != set(signed):
        problems.append(f"extracted payload {sorted(payload_files)} is not the signed file list {sorted(signed)}")
    for path, content in payload_files.items():
        digest = hashlib.sha256(content).hexdigest()
        if signed.get(path) != digest or subjects.get(path) != digest:
            problems.append(f"{path}: extracted content is not what the statement signs")
    if json.loads(files.get("manifest.json", b"null")) != predicate:
        problems.append("extracted manifest.json is not the signed predicate")
    sums = files.get("SHA256SUMS", b"")
    if subjects.get("SHA256SUMS") != hashlib.sha256(sums).hexdigest():
        problems.append("extracted SHA256SUMS is not the one the statement signs")
    return problems
