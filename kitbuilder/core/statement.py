"""in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).

The statement bytes are produced here, not by the in-toto-attestation library:
that library round-trips predicates through protobuf Structs, which turns
integers into floats, and the signed bytes must be exactly what we mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kitbuilder.core import jsonio
from kitbuilder.errors import FormatError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MANIFEST_PREDICATE_TYPE = "https://kitbuilder.dev/manifest/v1"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str


@dataclass(frozen=True)
class Statement:
    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in self.subjects],
            "predicateType": self.predicate_type,
            "predicate": self.predicate,
        }

    def to_bytes(self) -> bytes:
        return jsonio.dump_compact(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str, limits: jsonio.ParseLimits | None = None) -> Statement:
        """Parse a statement; FormatError naming ``what``. ``limits`` bound the parse before it starts."""
        document = jsonio.load_object(data, what=what, limits=limits)
        if document.get("_type") != STATEMENT_TYPE:
            raise FormatError(f"{what}: _type must be {STATEMENT_TYPE}")
        predicate_type = document.get("predicateType")
        predicate = document.get("predicate")
        raw_subjects = document.get("subject")
        if not isinstance(predicate_type, str) or not isinstance(predicate, dict):
            raise FormatError(f"{what}: predicateType must be a string and predicate an object")
        if not isinstance(raw_subjects, list) or not raw_subjects:
            raise FormatError(f"{what}: subject must be a non-empty list")
        subjects: list[Subject] = []
        for number, entry in enumerate(raw_subjects):
            digest = entry.get("digest") if isinstance(entry, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            value = digest.get("sha256") if isinstance(digest, dict) else None
            if not isinstance(name, str) or not isinstance(value, str) or not _SHA256.fullmatch(value):
                raise FormatError(f"{what}: subject[{number}] needs a name and a lowercase hex sha256 digest")
            subjects.append(Subject(name=name, sha256=value))
        return cls(subjects=tuple(subjects), predicate_type=predicate_type, predicate=predicate)
