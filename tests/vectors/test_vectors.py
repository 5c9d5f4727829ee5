"""The published test vectors (tests/vectors/, docs/test-vectors.md): `kit verify` gives each its verdict.

Each vector is a small kit named after its defect; vectors.json gives the trust keys (public keys
inline), the policy and the expected exit code and error kind. Every check here is one a second
implementation can make the same way. A vector kitbuilder does not get right yet is a kitbuilder bug:
it is xfail(strict=True) with the reason below, and turns into a failure once the fix lands (then drop
it from BUGS).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.factories.cli import run_kit

HERE = Path(__file__).resolve().parent
DOCUMENT: dict[str, Any] = json.loads((HERE / "vectors.json").read_text())
VECTORS = {vector["name"]: vector for vector in DOCUMENT["vectors"]}

BUGS: dict[str, str] = {}


def _params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=BUGS[name])) if name in BUGS else name
        for name in VECTORS
    ]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vector-keys")
    paths = {}
    for label, key in DOCUMENT["keys"].items():
        paths[label] = root / f"{label}.pub"
        paths[label].write_text(key["publicKeyPem"])
    return paths


@pytest.mark.parametrize("name", _params())
def test_vector_verdict(name: str, keys: dict[str, Path]) -> None:
    vector = VECTORS[name]
    kit = HERE / vector["file"]
    arguments: list[Any] = ["verify", kit, "--product", vector["policy"]["product"]]
    for label in vector["trust"]["keys"]:
        arguments += ["--key", keys[label]]
    if vector["trust"]["threshold"] != len(vector["trust"]["keys"]):
        arguments += ["--threshold", vector["trust"]["threshold"]]
    result = run_kit(*arguments)
    expected = vector["expect"]
    assert result.exit_code == expected["exitCode"], f"{name}: exit {result.exit_code}: {result.stderr}"
    if expected["exitCode"] == 0:
        assert result.stderr == ""
        return
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, f"not one line: {result.stderr!r}"
    kind = re.match(r"kit: (\w+) error: ", result.stderr)
    assert kind is not None and kind.group(1) == expected["kind"], result.stderr


def test_vector_files_are_the_ones_listed() -> None:
    """vectors.json lists every kit in the directory once, with its SHA-256, and the set stays small."""
    on_disk = {path.name for path in HERE.glob("*.kit.tar.zst")}
    listed = [vector["file"] for vector in DOCUMENT["vectors"]]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)
    for vector in DOCUMENT["vectors"]:
        data = (HERE / vector["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == vector["sha256"], vector["file"]
        assert vector["file"] == f"{vector['name']}.kit.tar.zst"
    assert sum((HERE / f).stat().st_size for f in listed) < 1 << 20


def test_vectors_cover_every_verdict() -> None:
    verdicts = {(v["expect"]["exitCode"], v["expect"]["kind"]) for v in DOCUMENT["vectors"]}
    assert verdicts >= {(0, None), (3, "trust"), (4, "integrity"), (5, "archive"), (5, "format"), (6, "policy")}


def test_key_ids_in_vectors_json_match_the_keys() -> None:
    """A second implementation may trust the listed key ids: they are the SHA-256 of each key's DER SPKI."""
    from cryptography.hazmat.primitives import serialization

    for label, key in DOCUMENT["keys"].items():
        public = serialization.load_pem_public_key(key["publicKeyPem"].encode())
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert hashlib.sha256(der).hexdigest() == key["keyid"], label
