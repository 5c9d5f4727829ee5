"""Attestations of a kit: in-toto envelopes inside it and beside it (KIT.intoto.jsonl), its Sigstore bundle.

Split from verify.py: these checks work on bytes already read (a kit's metadata members) or on one
small file they read themselves (a detached attestation), against a trust policy passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder import inputfile
from kitbuilder.core import jsonio
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope
from kitbuilder.core.manifest import (
    ATTESTATIONS_DIR,
    MANIFEST_JSON,
    MAX_ATTESTATIONS,
    SHA256SUMS,
    SIGSTORE_BUNDLE,
    FileEntry,
    Manifest,
    MetadataBudget,
)
from kitbuilder.core.provenance import PROVENANCE_MEMBER, PROVENANCE_PREDICATE_TYPE, read_predicate
from kitbuilder.core.statement import Statement
from kitbuilder.errors import FormatError, IntegrityError, PolicyError, UsageError
from kitbuilder.trust.signatures import TrustPolicy, verify_envelope

# A detached KIT.intoto.jsonl holds a few envelopes; like a metadata member it is read whole, so it is bounded:
# at most as many envelopes as a kit may carry attestations, each at most what an attestation of this kit may be.
MAX_DETACHED = 64 << 20
_MAX_DETACHED_LINES = 4 * MAX_ATTESTATIONS  # blank lines are skipped, but not millions of them


@dataclass(frozen=True)
class KeylessCheck:
    """A keyless Sigstore bundle over the kit's SHA256SUMS and who must have signed it."""

    bundle: Path
    trusted_root: Path
    identity: str
    issuer: str


@dataclass(frozen=True)
class AttestationReport:
    path: str
    predicate_type: str
    signers: tuple[str, ...]
    subjects: tuple[str, ...]
    detached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "predicateType": self.predicate_type,
            "signers": list(self.signers),
            "subjects": list(self.subjects),
            "detached": self.detached,
        }


def checksum_keyid(signed: Manifest, envelope: Envelope) -> str:
    """The key id of the key that made SHA256SUMS.sig: named in the signed predicate by kits built since it is.

    Older kits fall back to the envelope's first signature, which an attacker can put a junk one in front of.
    """
    named = signed.build.checksum_key_id
    return named if named is not None else envelope.signatures[0].keyid


class _KitSubjects(Mapping[str, str]):
    """The names a kit vouches for (its files, then its metadata ``extra``) with their SHA-256, looked up by name.

    The files' map is made on the first name that is not metadata: a kit's own provenance names only manifest.json
    and SHA256SUMS, and a dict of a million paths and hex digests would be the largest thing kit verify holds.
    """

    def __init__(self, files: Sequence[FileEntry], extra: Mapping[str, str]) -> None:
        self._files = files
        self._extra = dict(extra)
        self._by_path: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._by_path is None:
            self._by_path = {f.path: f.sha256 for f in self._files}
            self._by_path.update(self._extra)
        return self._by_path

    def __getitem__(self, name: str) -> str:
        if name in self._extra:
            return self._extra[name]
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def check_attestation(
    data: bytes, policy: TrustPolicy, subjects: Mapping[str, str], *, what: str, by_digest: bool = False
) -> AttestationReport:
    """One DSSE in-toto attestation: signed by trusted keys, well-formed, every subject matching.

    ``subjects`` maps names to SHA-256 digests the kit vouches for. With ``by_digest`` (a detached
    attestation about the kit file, whose name may have changed) a subject matches by digest alone.
    """
    envelope = Envelope.from_bytes(data, what=what)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(f"{what}: payloadType is {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE}")
    signers = verify_envelope(envelope, policy=policy, what=what)
    statement = Statement.from_bytes(envelope.payload, what=f"{what} payload")
    _check_statement_shape(envelope.payload, what=what)
    for subject in statement.subjects:
        if by_digest:
            if subject.sha256 not in subjects.values():
                raise IntegrityError(
                    f"{what}: subject {subject.name} has SHA-256 {subject.sha256[:16]}…, "
                    "which is not this kit file's; the attestation is for another file"
                )
            continue
        if subject.name not in subjects:
            raise IntegrityError(f"{what}: names subject {subject.name!r}, which this kit does not hold")
        if subjects[subject.name] != subject.sha256:
            raise IntegrityError(f"{what}: subject {subject.name} digest does not match the kit's {subject.name}")
    if statement.predicate_type == PROVENANCE_PREDICATE_TYPE:
        read_predicate(statement.predicate, what=what)
    return AttestationReport(
        path=what,
        predicate_type=statement.predicate_type,
        signers=signers,
        subjects=tuple(s.name for s in statement.subjects),
        detached=by_digest,
    )


# protobuf's JSON parser refuses a Struct nested deeper than this (its recursion limit of 100 counts two
# levels per JSON container), which made it the predicate's depth bound; kept as that bound.
MAX_PREDICATE_DEPTH = 50


def _predicate_too_deep(predicate: dict[str, Any]) -> bool:
    """Whether ``predicate`` nests more than ``MAX_PREDICATE_DEPTH`` objects and arrays (itself counted)."""
    level: list[Any] = [predicate]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_PREDICATE_DEPTH:
            return True
        below: list[Any] = []
        for item in level:
            values = item.values() if isinstance(item, dict) else item
            below.extend(v for v in values if isinstance(v, (dict, list)))
        level = below
    return False


def _check_statement_shape(payload: bytes, *, what: str) -> None:
    """Second opinion from the in-toto-attestation library on the Statement's shape (not its bytes).

    The library reads the predicate as a free-form Struct, so it is handed a one-key stand-in: converting a
    provenance that lists every input of a large kit cost a quarter of a second and checked nothing but
    its nesting depth, which is bounded here directly. The caller has parsed ``payload`` strictly already.
    """
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement as InTotoStatement

    try:
        document = jsonio.loads_strict(payload.decode("utf-8"))
        predicate = document.get("predicate") if isinstance(document, dict) else None
        if isinstance(predicate, dict) and predicate:
            if _predicate_too_deep(predicate):
                raise ValueError(f"predicate nested more than {MAX_PREDICATE_DEPTH} deep")
            document["predicate"] = {"checked": "by kit"}  # non-empty, as the library requires
        parsed = json_format.ParseDict(document, statement_pb2.Statement())
        InTotoStatement.copy_from_pb(parsed).validate()
    except (json_format.ParseError, ValueError) as exc:
        raise FormatError(f"{what}: not a valid in-toto Statement v1 ({str(exc).splitlines()[0]})") from exc


def check_kit_attestations(
    members: Mapping[str, bytes],
    envelope: Envelope,
    manifest: Manifest,
    *,
    policy: TrustPolicy,
    keyless: KeylessCheck | None = None,
    require_provenance: bool = False,
) -> tuple[tuple[AttestationReport, ...], dict[str, Any] | None]:
    """Every attestation and the Sigstore bundle among a kit's metadata ``members``; ``envelope`` is its
    manifest.dsse.json, ``manifest`` the signed manifest. PolicyError if provenance is required and absent."""
    subjects = _KitSubjects(
        manifest.files,
        {
            MANIFEST_JSON: hashlib.sha256(members[MANIFEST_JSON]).hexdigest(),
            SHA256SUMS: hashlib.sha256(members[SHA256SUMS]).hexdigest(),
        },
    )
    reports = tuple(
        check_attestation(members[name], policy, subjects, what=name)
        for name in members
        if name.startswith(f"{ATTESTATIONS_DIR}/")
    )
    for report in reports:
        # The name kit build gives its SLSA provenance, which `kit inspect --provenance` reads as such.
        if report.path == PROVENANCE_MEMBER and report.predicate_type != PROVENANCE_PREDICATE_TYPE:
            raise FormatError(
                f"{PROVENANCE_MEMBER}: predicateType {report.predicate_type!r}; this name holds "
                f"{PROVENANCE_PREDICATE_TYPE} provenance only, put other attestations under another name"
            )
    sigstore: dict[str, Any] | None = None
    if SIGSTORE_BUNDLE in members:
        from kitbuilder.trust.sigstore_bundle import parse_key_bundle, verify_key_bundle

        # Made by the first build key, like SHA256SUMS.sig: checked when that key is trusted here.
        first_keyid = checksum_keyid(manifest, envelope)
        signer: str | None = None
        if any(k.keyid == first_keyid for k in policy.keys):
            signer = verify_key_bundle(
                members[SHA256SUMS], members[SIGSTORE_BUNDLE], policy=policy, what=SIGSTORE_BUNDLE
            )
        else:
            parse_key_bundle(members[SIGSTORE_BUNDLE], what=SIGSTORE_BUNDLE)  # malformed is still a format error
        sigstore = {"bundle": SIGSTORE_BUNDLE, "kind": "key", "signer": signer}
    if keyless is not None:
        from kitbuilder.ops.trust_inputs import verify_keyless

        result = verify_keyless(
            members[SHA256SUMS],
            bundle=keyless.bundle,
            trusted_root=keyless.trusted_root,
            identity=keyless.identity,
            issuer=keyless.issuer,
        )
        sigstore = {
            "bundle": str(keyless.bundle),
            "kind": "keyless",
            "identity": result.identity,
            "issuer": result.issuer,
            "logIndex": result.log_index,
            "integratedTime": result.integrated_time,
            "certificateSha256": result.certificate_sha256,
            **({"keyBundleSigner": sigstore["signer"]} if sigstore else {}),
        }
    if require_provenance and not any(r.predicate_type == PROVENANCE_PREDICATE_TYPE for r in reports):
        raise PolicyError(
            f"kit carries no {PROVENANCE_MEMBER} (SLSA provenance) and --require-provenance is set; "
            "rebuild it with provenance (the default) or drop the flag"
        )
    return reports, sigstore


def check_detached(path: Path, kit_sha256: str, policy: TrustPolicy, *, members: int) -> list[AttestationReport]:
    """A KIT.intoto.jsonl file: one DSSE envelope per line, each about this kit file.

    ``members`` is the verified kit's member count: each line may be as large as an attestation inside a
    kit of that many members, and the file may hold at most ``MAX_ATTESTATIONS`` of them. The lines are
    found in the bytes one at a time, never as a list of every line (64 MiB of newlines is 64 million).
    """
    line_limit = MetadataBudget(members).attestation_bytes()
    limit = min(MAX_DETACHED, MAX_ATTESTATIONS * (line_limit + 1))
    try:
        data = inputfile.read_small(path, limit=limit, what="KIT.intoto.jsonl of this kit", too_big=FormatError)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read attestation ({exc.strerror})") from exc
    lines = data.count(b"\n") + 1
    if lines > _MAX_DETACHED_LINES:
        raise FormatError(
            f"{path}: {lines} lines; a KIT.intoto.jsonl holds one DSSE envelope per line, "
            f"at most {MAX_ATTESTATIONS} (and at most {_MAX_DETACHED_LINES} lines)"
        )
    reports: list[AttestationReport] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end]
        start = end + 1
        if not line.strip():
            continue
        number = len(reports) + 1
        if number > MAX_ATTESTATIONS:
            raise FormatError(f"{path}: more than {MAX_ATTESTATIONS} attestations (one DSSE envelope per line)")
        if len(line) > line_limit:
            raise FormatError(
                f"{path}:{number}: {len(line)} bytes, more than the {line_limit} an attestation of this kit may have"
            )
        reports.append(check_attestation(line, policy, {"kit": kit_sha256}, what=f"{path}:{number}", by_digest=True))
    if not reports:
        raise FormatError(f"{path}: no attestation in the file (expected one DSSE envelope per line)")
    return reports
