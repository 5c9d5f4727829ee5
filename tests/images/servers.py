"""Servers for the image tests: Debian's docker-registry, a token service for it, and a proxy that cuts uploads.

The registry is the real CNCF distribution registry, started on 127.0.0.1 with
filesystem storage in a temporary directory. The token service and the proxy
are small and local: the token service signs the JWTs the registry verifies
(ES256 with an x5c chain, as the distribution token spec describes), and the
proxy forwards to the registry, counts requests, and can cut the connection in
the middle of a blob upload to stand in for a network that fails mid-push.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import datetime
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, *, common_name: str = "kit-test-ca") -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def bcrypt_hash(password: str) -> str | None:
    """A bcrypt hash from the system's libcrypt (libxcrypt on Debian), or None where it lacks bcrypt."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.crypt.restype = ctypes.c_char_p
    library.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "$2b$05$" + "".join(secrets.choice(alphabet) for _ in range(22))
    result = library.crypt(password.encode(), salt.encode())
    if not result or not result.startswith(b"$2b$"):
        return None
    return str(result.decode())


class RegistryServer:
    """docker-registry serving 127.0.0.1:<free port> from a temporary storage directory."""

    def __init__(self, root: Path, *, tls: TlsFiles | None = None, auth: dict[str, Any] | None = None) -> None:
        assert REGISTRY_BIN is not None
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)},
        }
        if tls is not None:
            config["http"]["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
        if auth is not None:
            config["auth"] = auth
        # JSON is YAML; the registry reads it as its config file.
        (root / "config.yml").write_text(json.dumps(config))
        self.log = (root / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError:
            self.stop()
            raise

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> _Server:
    server = _Server((host, 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues registry tokens (ES256 JWT, x5c) for any requested scope to one user; 401 for anyone else."""

    def __init__(self, directory: Path, *, username: str, password: str, service: str = "kit-test-registry") -> None:
        self.username, self.password, self.service = username, password, service
        self.issuer = "kit-test-issuer"
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kit-test-token-signer")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-signer.pem"
        directory.mkdir(parents=True, exist_ok=True)
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, list[str]]] = []
        service_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                service_.requests.append(query)
                expected = "Basic " + base64.b64encode(f"{service_.username}:{service_.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": service_.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _serve(Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": self.username,
            "aud": self.service,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def auth_config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.bundle),
            }
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int  # 0 when the proxy cut the connection
    body: int


class CuttingProxy:
    """Forwards HTTP to the registry, records every request, and can cut uploads after a byte budget.

    With ``cut_after`` set, once that many bytes of blob-upload bodies have passed
    (in total), every later upload request is cut in the middle of its body: the
    connection is reset and no answer is sent, as when a link drops mid-push.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[Seen] = []
        self.cut_after: int | None = None
        self.upload_bytes = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                is_upload = "/blobs/uploads/" in split.path and self.command in ("PATCH", "PUT") and length > 0
                with proxy._lock:
                    allowed = length
                    if is_upload and proxy.cut_after is not None:
                        allowed = min(length, max(0, proxy.cut_after - proxy.upload_bytes))
                    if is_upload:
                        proxy.upload_bytes += allowed
                body = self.rfile.read(allowed) if allowed else b""
                if allowed < length:
                    proxy.seen.append(Seen(self.command, split.path, parse_qs(split.query), 0, len(body)))
                    # Reset, not a clean close: the client sees the link drop mid-body.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() not in ("connection", "keep-alive", "proxy-connection"):
                            upstream.putheader(key, value)
                    upstream.endheaders(body if body else None)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                proxy.seen.append(Seen(self.command, split.path, parse_qs(split.query), response.status, len(body)))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "keep-alive", "transfer-encoding", "date", "server"):
                        self.send_header(key, value)
                if response.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = _serve(Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def commits(self) -> list[str]:
        """Digests of blob uploads the registry completed (PUT ...?digest= answered 201)."""
        return [
            s.query["digest"][0] for s in self.seen if s.method == "PUT" and s.status == 201 and "digest" in s.query
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeRegistry:
    """A deliberately misbehaving registry: sends clients elsewhere (another host) for uploads or on ping."""

    def __init__(self, *, redirect_to: str, on: str) -> None:
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                fake.seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = urlsplit(self.path).path
                if on == "ping" and path == "/v2/":
                    self._reply(307, {"Location": f"{redirect_to}/v2/"})
                elif path == "/v2/":
                    self._reply(200, {})
                elif self.command == "HEAD":
                    self._reply(404, {})
                elif self.command == "POST" and path.endswith("/blobs/uploads/"):
                    self._reply(202, {"Location": f"{redirect_to}/v2/x/blobs/uploads/1"})
                else:
                    self._reply(404, {})

            def _reply(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        self.server = _serve(Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Witness:
    """A server on another loopback address that only records whether anyone reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        witness = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> None:
                witness.seen.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _record

        self.server = _serve(Handler, host="127.0.0.2")

    @property
    def url(self) -> str:
        return f"http://127.0.0.2:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


def skopeo_raw_digest(reference: str, *extra: str) -> str:
    """The digest of the manifest (or index) skopeo fetches for ``reference``, as the registry serves it."""
    import hashlib

    raw = subprocess.run(["skopeo", "inspect", "--raw", *extra, reference], check=True, capture_output=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def environment_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
