"""Fixtures for the image tests: test images, a kit carrying them, and real registries on 127.0.0.1."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kitbuilder.ops.verify import VerifyOptions
from kitbuilder.trust.signatures import TrustPolicy
from tests.factories.cli import run_kit
from tests.factories.keys import ed25519_key, write_pair
from tests.factories.oci_images import ImageSet, build_image_set
from tests.images.servers import REGISTRY_BIN, RegistryServer, TlsFiles, TokenService, bcrypt_hash, make_tls

BIG_LAYER = 3 << 20  # one layer big enough for chunked uploads at the 1 MiB chunk size the tests use

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (apt install skopeo)")
needs_umoci = pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci (apt install umoci)")


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return build_image_set(tmp_path_factory.mktemp("images"), big_layer=BIG_LAYER)


@dataclass(frozen=True)
class Signing:
    key: Path
    pub: Path

    def options(self) -> VerifyOptions:
        return VerifyOptions(
            policy=TrustPolicy(keys=(ed25519_key("images").public,), threshold=1), now=datetime.now(UTC)
        )


@pytest.fixture(scope="session")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Signing:
    key, pub = write_pair(ed25519_key("images"), tmp_path_factory.mktemp("keys") / "images")
    return Signing(key, pub)


# The kit every push/export test uses: refs as an air-gapped site would name them.
KIT_IMAGES = (
    {"ref": "registry.local/stellaops/app-a:1.0", "source": "layout", "sourceRef": "app-a"},
    {"ref": "registry.local/stellaops/app-b:1.0", "source": "layout", "sourceRef": "app-b"},
    {"ref": "registry.local/stellaops/multi:1.0", "source": "layout", "sourceRef": "multi"},
    {"ref": "registry.local/tools/tool:1.0", "source": "tool.docker.tar"},
    {"ref": "registry.local/stellaops/archived:1.0", "source": "app-a.oci.tar", "format": "oci-archive"},
)


def write_image_spec(
    directory: Path, images: Any, *, name: str = "image-kit", extra: dict[str, Any] | None = None
) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "kitbuilder/v1",
        "name": name,
        "version": "1.0.0",
        "sequence": 1,
        "expires": "2099-01-01T00:00:00Z",
        "product": "demo",
        "images": list(images),
        **(extra or {}),
    }
    spec = directory / "kit.yaml"
    spec.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec


def build_image_kit(spec: Path, signing: Signing, out: Path) -> Path:
    result = run_kit("build", spec, "--key", signing.key, "--out", out, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def image_kit(image_set: ImageSet, signing: Signing, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = write_image_spec(image_set.root, KIT_IMAGES)
    return build_image_kit(spec, signing, tmp_path_factory.mktemp("kit") / "images.kit.tar.zst")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP, anonymous docker-registry for the session (tests push to distinct repositories)."""
    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (apt install docker-registry)")
    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An empty registry for tests that count what is sent."""
    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (apt install docker-registry)")
    server = RegistryServer(tmp_path / "registry")
    yield server
    server.stop()


@dataclass
class SecureRegistry:
    server: RegistryServer
    tls: TlsFiles
    username: str
    password: str


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRegistry]:
    """HTTPS (own test CA) with htpasswd basic auth."""
    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (apt install docker-registry)")
    hashed = bcrypt_hash("s3cret-pass")
    if hashed is None:
        pytest.skip("the system libcrypt cannot make bcrypt hashes for htpasswd")
    root = tmp_path_factory.mktemp("tls-registry")
    tls = make_tls(root / "tls")
    (root / "htpasswd").write_text(f"pusher:{hashed}\n")
    server = RegistryServer(
        root / "server", tls=tls, auth={"htpasswd": {"realm": "kit-test", "path": str(root / "htpasswd")}}
    )
    yield SecureRegistry(server, tls, "pusher", "s3cret-pass")
    server.stop()


@dataclass
class TokenRegistry:
    server: RegistryServer
    tokens: TokenService
    username: str
    password: str


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """Plain HTTP with bearer-token auth from a local token service."""
    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (apt install docker-registry)")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenService(root / "tokens", username="robot", password="t0ken-pass")
    server = RegistryServer(root / "server", auth=tokens.auth_config())
    yield TokenRegistry(server, tokens, "robot", "t0ken-pass")
    server.stop()
    tokens.stop()
