"""`kit images push` against Debian's docker-registry: digests, skipping, mounts, chunks, failures, auth, TLS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.errors import KitError, RegistryError, UsageError
from kitbuilder.oci.reference import parse_registry, split_reference
from kitbuilder.oci.registry import RegistryClient, RetryPolicy, TransferOptions
from kitbuilder.ops import images as images_op
from kitbuilder.ops.images import push_images
from kitbuilder.ops.verify import verify_kit
from tests.factories.kits import member_end
from tests.images.conftest import (
    KIT_IMAGES,
    SecureRegistry,
    Signing,
    TokenRegistry,
    needs_skopeo,
)
from tests.images.servers import (
    CuttingProxy,
    FakeRegistry,
    RegistryServer,
    Witness,
    free_port,
    skopeo,
    skopeo_raw_digest,
)

# Small chunks so the 3 MiB layer goes up as several PATCHes; no waiting between retries.
FAST = TransferOptions(chunk_size=1 << 20, monolithic_max=1 << 20, retry=RetryPolicy(attempts=3, first_delay=0.0))


def push(kit: Path, host: str, signing: Signing, **kwargs: Any) -> images_op.PushResult:
    kwargs.setdefault("tls_verify", False)
    kwargs.setdefault("transfer", FAST)
    return push_images(kit, host, signing.options(), **kwargs)


def records(kit: Path, signing: Signing) -> list[dict[str, object]]:
    return [r.to_json() for r in verify_kit(kit, signing.options()).manifest.images]


@needs_skopeo
def test_push_lands_the_digests_the_kit_recorded(
    image_kit: Path, signing: Signing, registry: RegistryServer, tmp_path: Path
) -> None:
    result = push(image_kit, registry.host, signing)
    recorded = records(image_kit, signing)
    assert [i.pushed_as for i in result.images] == [
        f"{registry.host}/stellaops/app-a:1.0",
        f"{registry.host}/stellaops/app-b:1.0",
        f"{registry.host}/stellaops/multi:1.0",
        f"{registry.host}/tools/tool:1.0",
        f"{registry.host}/stellaops/archived:1.0",
    ]
    for image, record in zip(result.images, recorded, strict=True):
        assert image.digest == record["digest"]
        assert skopeo_raw_digest(f"docker://{image.pushed_as}", "--tls-verify=false") == record["digest"]
    tool = result.images[3]
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{tool.pushed_as}"))
    assert inspected["Digest"] == tool.digest and inspected["Architecture"] == "amd64"
    # skopeo copies each image back out of the registry with the same digests, indexes whole.
    for image, name in ((result.images[2], "multi"), (result.images[3], "tool")):
        out = tmp_path / name
        skopeo(
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            f"docker://{image.pushed_as}",
            f"oci:{out}:{name}",
        )
        assert json.loads((out / "index.json").read_text())["manifests"][0]["digest"] == image.digest
    # Images sharing blobs: the second repository mounts what the first received in this run.
    assert result.images[1].blobs_mounted >= 1  # app-b's base layer, from stellaops/app-a
    assert result.images[4].blobs_mounted == 3 and result.images[4].blobs_sent == 0  # same image, other repository


def test_second_push_sends_nothing(image_kit: Path, signing: Signing, registry: RegistryServer) -> None:
    push(image_kit, registry.host, signing)
    again = push(image_kit, registry.host, signing).to_json()
    assert again["blobsSent"] == 0 and again["bytesSent"] == 0 and again["blobsMounted"] == 0
    assert all(i["blobsSkipped"] >= 2 for i in again["images"])


def test_big_blobs_go_up_in_chunks_and_small_ones_in_one_put(
    image_kit: Path, signing: Signing, fresh_registry: RegistryServer
) -> None:
    proxy = CuttingProxy(fresh_registry.port)
    try:
        result = push(image_kit, proxy.host, signing, refs=["registry.local/stellaops/app-b:1.0"])
    finally:
        proxy.stop()
    (image,) = result.images
    patches = [s for s in proxy.seen if s.method == "PATCH"]
    assert len(patches) == 4  # 3 MiB of tar data and headers, 1 MiB chunks: three full, one short
    assert all(p.body == 1 << 20 for p in patches[:3]) and 0 < patches[3].body < 1 << 20
    commits = proxy.commits()
    assert len(commits) == image.blobs_sent == 3 and len(set(commits)) == 3
    assert image.bytes_sent == sum(s.body for s in proxy.seen if "/blobs/uploads/" in s.path)


def test_only_the_named_refs_are_pushed(image_kit: Path, signing: Signing, fresh_registry: RegistryServer) -> None:
    result = push(image_kit, fresh_registry.host, signing, refs=["registry.local/tools/tool:1.0"])
    assert [i.ref for i in result.images] == ["registry.local/tools/tool:1.0"]
    with pytest.raises(UsageError, match=r"has no image 'registry.local/nope:1' \(it has: registry.local/stellaops"):
        push(image_kit, fresh_registry.host, signing, refs=["registry.local/nope:1"])


def test_push_cut_midway_fails_then_a_rerun_completes_without_resending(
    image_kit: Path, signing: Signing, fresh_registry: RegistryServer
) -> None:
    proxy = CuttingProxy(fresh_registry.port)
    try:
        # Enough for app-a whole and part of app-b's big layer; every upload after that is cut.
        proxy.cut_after = 1_500_000
        with pytest.raises(RegistryError) as caught:
            push(image_kit, proxy.host, signing)
        message = str(caught.value)
        assert caught.value.exit_code == 11 and "\n" not in message
        assert "gave up after 3 attempts; rerun the push" in message
        first = proxy.commits()
        assert len(first) >= 3  # app-a's config and layers landed before the cut
        assert any(s.status == 0 for s in proxy.seen)
        before = len(proxy.seen)
        proxy.cut_after = None
        result = push(image_kit, proxy.host, signing)
        rerun = proxy.seen[before:]
    finally:
        proxy.stop()
    commits = proxy.commits()
    assert len(commits) == len(set(commits)), "a blob was committed twice"
    assert not set(first) & {s.query["digest"][0] for s in rerun if "digest" in s.query and s.method == "PUT"}
    assert result.images[0].blobs_skipped == 3 and result.images[0].blobs_sent == 0
    for image, record in zip(result.images, records(image_kit, signing), strict=True):
        assert image.digest == record["digest"]


def test_registry_down_is_a_registry_error(image_kit: Path, signing: Signing) -> None:
    port = free_port()
    with pytest.raises(RegistryError) as caught:
        push(image_kit, f"127.0.0.1:{port}", signing)
    message = str(caught.value)
    assert message.startswith(f"registry 127.0.0.1:{port}: GET /v2/:") and "\n" not in message
    assert "is a registry running at" in message and caught.value.exit_code == 11


def test_redirect_to_another_host_is_refused_and_never_followed(image_kit: Path, signing: Signing) -> None:
    witness = Witness()
    for where in ("ping", "upload"):
        fake = FakeRegistry(redirect_to=witness.url, on=where)
        try:
            with pytest.raises(RegistryError, match=r"points to http://127.0.0.2:\d+, another host; kit only talks"):
                push(image_kit, fake.host, signing)
        finally:
            fake.stop()
        assert fake.seen
    witness.stop()
    assert witness.seen == []


def test_tls_registry_with_basic_auth(image_kit: Path, signing: Signing, tls_registry: SecureRegistry) -> None:
    host, tls = tls_registry.server.host, tls_registry.tls
    login = {"username": tls_registry.username, "password": tls_registry.password}
    with pytest.raises(RegistryError, match=r"TLS certificate not trusted .*pass --ca-cert FILE"):
        push(image_kit, host, signing, tls_verify=True, **login)
    with pytest.raises(RegistryError, match=r"requires a login \(Basic\); pass --username and --password-stdin"):
        push(image_kit, host, signing, tls_verify=True, ca_cert=tls.ca)
    with pytest.raises(RegistryError, match="access denied for user 'pusher'"):
        push(image_kit, host, signing, tls_verify=True, ca_cert=tls.ca, username="pusher", password="wrong")
    result = push(
        image_kit, host, signing, tls_verify=True, ca_cert=tls.ca, refs=["registry.local/tools/tool:1.0"], **login
    )
    assert result.images[0].blobs_sent == 3


def test_token_registry_bearer_flow(image_kit: Path, signing: Signing, token_registry: TokenRegistry) -> None:
    host = token_registry.server.host
    login = {"username": token_registry.username, "password": token_registry.password}
    with pytest.raises(RegistryError, match="access denied for user 'robot'"):
        push(image_kit, host, signing, username="robot", password="nope")
    refs = ["registry.local/stellaops/app-a:1.0", "registry.local/stellaops/archived:1.0"]
    result = push(image_kit, host, signing, refs=refs, **login)
    assert result.images[1].blobs_mounted == 3  # mount needs pull on the source repository: a wider token
    scopes = [scope for query in token_registry.tokens.requests for scope in query.get("scope", [])]
    assert "repository:stellaops/archived:pull,push" in scopes and "repository:stellaops/app-a:pull" in scopes


def test_kit_changed_after_verify_sends_no_altered_blob(
    image_kit: Path, signing: Signing, fresh_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = Path(shutil.copy(image_kit, tmp_path / "k.kit.tar.zst"))
    target: dict[str, str] = {}

    def verify_then_tamper(path: Path, options: Any, *, stream: Any = None) -> Any:
        report = verify_kit(path, options, stream=stream)
        biggest = max((f for f in report.manifest.files if f.path.startswith("images/blobs/")), key=lambda f: f.size)
        target["digest"] = "sha256:" + biggest.path.rsplit("/", 1)[1]
        # Flip content bytes in the stored (raw) block of that blob's data frame: the frame ends with the
        # tar padding (and no checksum: incompressible data is stored), so step back over the padding.
        padding = -biggest.size % 512
        end = member_end(path, biggest.path)
        with path.open("r+b") as stream:
            stream.seek(end - padding - 200)
            data = stream.read(100)
            stream.seek(end - padding - 200)
            stream.write(bytes(b ^ 0x55 for b in data))
        return report

    monkeypatch.setattr(images_op, "verify_kit", verify_then_tamper)
    proxy = CuttingProxy(fresh_registry.port)
    try:
        with pytest.raises(KitError) as caught:
            push(kit, proxy.host, signing, refs=["registry.local/stellaops/app-b:1.0"])
    finally:
        proxy.stop()
    assert getattr(caught.value, "exit_code", None) in (4, 5)
    assert target["digest"] not in proxy.commits()


def test_registry_and_reference_parsing() -> None:
    assert parse_registry("127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("http://127.0.0.1:5000", "host/path", "host:99999", ""):
        with pytest.raises(UsageError, match="--registry"):
            parse_registry(bad)
    assert split_reference("registry.local/stellaops/concelier:2025.11") == (
        "registry.local",
        "stellaops/concelier",
        "2025.11",
    )
    assert split_reference("localhost:5000/app") == ("localhost:5000", "app", "latest")
    assert split_reference("stellaops/app:1") == (None, "stellaops/app", "1")
    assert split_reference("postgres") == (None, "postgres", "latest")
    assert KIT_IMAGES[0]["ref"].startswith("registry.local/")


def test_client_closes_cleanly_without_requests() -> None:
    with RegistryClient("127.0.0.1:1", tls_verify=False) as client:
        assert client.base == "https://127.0.0.1:1"


def test_tls_against_a_plain_http_registry_says_so_at_once(
    image_kit: Path, signing: Signing, registry: RegistryServer
) -> None:
    with pytest.raises(RegistryError, match=r"no TLS on this port .*pass --no-tls-verify"):
        push(image_kit, registry.host, signing, tls_verify=True)
