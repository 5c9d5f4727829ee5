"""The names of a kit's metadata members (docs/format.md §0.1, §0.7), in one place below every format module.

Both the manifest (core/manifest.py, which re-exports them) and the file list's reader (core/filelist.py, which
refuses a payload path that is one of them) need them, and the manifest imports the file list.
"""

from __future__ import annotations

import re

MANIFEST_JSON = "manifest.json"
MANIFEST_DSSE = "manifest.dsse.json"
SHA256SUMS = "SHA256SUMS"
SHA256SUMS_SIG = "SHA256SUMS.sig"
FILE_LIST = "manifest.files.jsonl"
# Written after the payload, in this order, so every input byte is read once. Format 2 adds the signed file
# list (manifest.files.jsonl) before manifest.json, which signs it by digest; format 1 (read only) has none.
METADATA_FILES = (SHA256SUMS, SHA256SUMS_SIG, FILE_LIST, MANIFEST_JSON, MANIFEST_DSSE)
METADATA_FILES_V1 = (SHA256SUMS, SHA256SUMS_SIG, MANIFEST_JSON, MANIFEST_DSSE)
# Optional metadata after those: signed statements about the kit's metadata (they name manifest.json and
# SHA256SUMS by digest, so neither can list them) and the Sigstore form of the SHA256SUMS signature.
ATTESTATIONS_DIR = "attestations"
SIGSTORE_BUNDLE = "SHA256SUMS.sigstore.json"
ATTESTATION_NAME = re.compile(r"attestations/[a-z0-9][a-z0-9._-]{0,100}\.dsse\.json")
# Every metadata name starts with one of these: a cheap first test for a reader asking of each of a million paths.
METADATA_PREFIXES = (*METADATA_FILES, SIGSTORE_BUNDLE, f"{ATTESTATIONS_DIR}/")


def is_optional_metadata(name: str) -> bool:
    return name == SIGSTORE_BUNDLE or ATTESTATION_NAME.fullmatch(name) is not None


def is_metadata(name: str) -> bool:
    """Whether ``name`` is a metadata member's name (of either format); no payload file may have one."""
    return name.startswith(METADATA_PREFIXES) and (name in METADATA_FILES or is_optional_metadata(name))
