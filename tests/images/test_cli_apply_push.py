"""`kit apply --registry`: the database part, then the push, as one operation (ops/apply_and_push.py).

A push that fails after the apply succeeded keeps the apply's report (exit 11, status succeeded), and a
password read from standard input serves both the registry check before the apply and the push after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kitbuilder.cli import main
from tests.factories.cli import run_kit
from tests.images.conftest import KIT_IMAGES, SecureRegistry, Signing
from tests.images.servers import REGISTRY_BIN, FakeRegistry, RegistryServer, Witness, bcrypt_hash, make_tls
from tests.integration.test_json_outputs import assert_matches


@pytest.fixture
def own_tls_registry(tmp_path: Path) -> Iterator[SecureRegistry]:
    """A TLS registry with basic auth of this test's own (the session one is shared: a full push would fill it)."""
    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (apt install docker-registry)")
    hashed = bcrypt_hash("s3cret-pass")
    if hashed is None:
        pytest.skip("the system libcrypt cannot make bcrypt hashes for htpasswd")
    tls = make_tls(tmp_path / "tls")
    (tmp_path / "htpasswd").write_text(f"pusher:{hashed}\n")
    auth = {"htpasswd": {"realm": "kit-test", "path": str(tmp_path / "htpasswd")}}
    server = RegistryServer(tmp_path / "registry", tls=tls, auth=auth)
    yield SecureRegistry(server, tls, "pusher", "s3cret-pass")
    server.stop()


def _apply(image_kit: Path, signing: Signing, tmp_path: Path, *extra: object) -> list[object]:
    db, artifacts = tmp_path / "site.db", tmp_path / "artifacts"
    return ["apply", image_kit, "--key", signing.pub, "--db", db, "--artifacts", artifacts, *extra]


def test_a_push_failing_after_the_apply_keeps_the_applied_report(
    image_kit: Path, signing: Signing, fresh_registry: RegistryServer, tmp_path: Path
) -> None:
    witness = Witness()
    fake = FakeRegistry(redirect_to=witness.url, on="upload")  # answers the check, fails the first upload
    try:
        args = _apply(image_kit, signing, tmp_path, "--registry", fake.host, "--no-tls-verify", "--json")
        failed = run_kit(*args)
    finally:
        fake.stop()
        witness.stop()
    assert failed.exit_code == 11, failed.output
    document = json.loads(failed.stdout)
    assert_matches("apply-report", document)
    assert (document["ok"], document["status"], document["error"]["kind"]) == (False, "succeeded", "registry")
    assert "images" not in document and Path(document["evidence"]["directory"], "report.json").is_file()
    assert witness.seen == [] and failed.stderr.count("\n") == 1
    # The database part stays applied; the rerun skips it and finishes the push.
    registry = ("--registry", fresh_registry.host, "--no-tls-verify")
    rerun = run_kit(*_apply(image_kit, signing, tmp_path, *registry), "--json")
    assert rerun.exit_code == 0, rerun.output
    again = json.loads(rerun.stdout)
    assert again["status"] == "succeeded" and again["steps"] == [], "nothing left to apply"
    assert len(again["images"]["images"]) == len(KIT_IMAGES)


def test_a_password_from_stdin_serves_the_check_and_the_push(
    image_kit: Path, signing: Signing, own_tls_registry: SecureRegistry, tmp_path: Path
) -> None:
    registry = own_tls_registry
    login = ("--ca-cert", registry.tls.ca, "--username", registry.username, "--password-stdin")
    args = _apply(image_kit, signing, tmp_path, "--registry", registry.server.host, *login)
    done = CliRunner().invoke(main, [str(a) for a in args], input=f"{registry.password}\n")
    assert done.exit_code == 0, done.output
    assert done.stdout.count("pushed ") == len(KIT_IMAGES)
