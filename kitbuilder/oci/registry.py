"""A small OCI distribution client over httpx: ping, auth, blob existence, mount, upload, manifest push.

It talks to exactly one registry, the one named (``HOST[:PORT]``): redirects are
followed only to that same origin, upload locations must stay on it, and a
bearer-token realm must be on the same host. Transient failures (connection
errors, 5xx, 408, 429) are retried with exponential backoff; a blob upload that
fails midway is started over from its first byte, and a rerun skips every blob
the registry already has. Every failure is a one-line RegistryError.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kitbuilder import __version__
from kitbuilder.errors import RegistryError, UsageError
from kitbuilder.oci.reference import parse_registry

T = TypeVar("T")

_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PIECE = 256 << 10
Body = list[bytes] | list[memoryview]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried (the delay doubles each time)."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.max_delay, self.first_delay * (2**attempt))
        return float(min(self.max_delay, max(base, retry_after or 0.0)))


@dataclass(frozen=True)
class TransferOptions:
    """Upload shape: blobs up to ``monolithic_max`` go in one PUT, bigger ones as PATCH chunks of ``chunk_size``.

    ``parallel`` blobs of an image go up at once; manifests follow once all of them have landed.
    """

    chunk_size: int = 16 << 20
    monolithic_max: int = 16 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 300.0
    parallel: int = 3  # blobs of one image uploaded side by side


class _Transient(Exception):
    """A failure worth retrying; ``message`` is what the user sees if retries run out."""

    def __init__(self, message: str, retry_after: float | None = None, *, transport: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.transport = transport  # no HTTP answer at all (refused, reset, TLS handshake, timeout)


def _error_detail(response: httpx.Response) -> str:
    try:
        document = response.json()
        first = document["errors"][0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = response.text[:200].strip()
    text = " ".join(text.split())
    return f"{response.status_code} {text}" if text else str(response.status_code)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {key.lower(): value for key, value in _CHALLENGE_PARAM.findall(rest)}


class RegistryClient:
    """One registry, one httpx connection pool; use as a context manager."""

    def __init__(
        self,
        registry: str,
        *,
        tls_verify: bool = True,
        ca_cert: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        options: TransferOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = parse_registry(registry)
        self.options = options or TransferOptions()
        self._tls_verify = tls_verify
        self._credentials = (username, password or "") if username is not None else None
        self._sleep = sleep
        verify: ssl.SSLContext | bool = tls_verify
        if tls_verify:
            context = ssl.create_default_context()
            if ca_cert is not None:
                try:
                    context.load_verify_locations(cafile=str(ca_cert))
                except (OSError, ssl.SSLError) as exc:
                    raise UsageError(f"--ca-cert {ca_cert}: cannot load a PEM CA certificate ({exc})") from exc
            verify = context
        # trust_env=False: no proxy or netrc from the environment; requests go to the named registry only.
        self._http = httpx.Client(
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(self.options.timeout, connect=30.0),
            headers={"User-Agent": f"kitbuilder/{__version__}"},
        )
        self._scheme = "https"
        self._auth: str | None = None  # None (anonymous), "basic" or "bearer"
        self._bearer: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], str] = {}

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def base(self) -> str:
        return f"{self._scheme}://{self.registry}"

    # -- requests -------------------------------------------------------------------------------------------

    def _origin(self, url: httpx.URL) -> tuple[str, str, int | None]:
        default = {"https": 443, "http": 80}.get(url.scheme)
        return url.scheme, url.host, url.port or default

    def _same_origin(self, url: httpx.URL) -> bool:
        return self._origin(url) == self._origin(httpx.URL(self.base))

    def _resolve(self, location: str, what: str) -> httpx.URL:
        url = httpx.URL(self.base).join(location)
        if not self._same_origin(url):
            raise RegistryError(
                f"registry {self.registry}: {what} points to {url.scheme}://{url.host}"
                f"{':' + str(url.port) if url.port else ''}, another host; kit only talks to the registry named by "
                "--registry (configure the registry's own storage so it does not redirect)"
            )
        return url

    def _headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        if self._auth == "bearer":
            return {"Authorization": f"Bearer {self._token(scopes)}"}
        return {}

    def _send(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        scopes: tuple[str, ...],
        expected: tuple[int, ...],
        headers: dict[str, str] | None = None,
        content: Body | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request (plus an auth refresh and same-origin redirects); _Transient or RegistryError on failure."""
        target = httpx.URL(str(url)) if not isinstance(url, httpx.URL) else url
        if params:
            target = target.copy_merge_params(params)
        what = f"{method} {target.path}"
        refreshed = False
        asked = scopes
        for _ in range(5):
            all_headers = {**(headers or {}), **self._headers(scopes)}
            auth = httpx.BasicAuth(*self._credentials) if self._auth == "basic" and self._credentials else None
            if content is not None:
                all_headers["Content-Length"] = str(sum(len(part) for part in content))
            try:
                response = self._http.request(method, target, headers=all_headers, content=_pieces(content), auth=auth)
            except httpx.TransportError as exc:
                raise self._transport_failure(exc, what) from exc
            if response.status_code in expected:
                if scopes != asked and scopes in self._tokens:
                    self._tokens[asked] = self._tokens[scopes]  # the wider token serves later requests too
                return response
            if response.status_code == 401 and self._auth == "bearer" and not refreshed:
                # The token lacks a scope this request needs (or expired): ask again with the challenge's scope.
                refreshed = True
                scheme, params_ = _challenge(response.headers.get("WWW-Authenticate", ""))
                extra = tuple(params_.get("scope", "").split()) if scheme == "bearer" else ()
                self._tokens.pop(scopes, None)
                scopes = tuple(sorted(set(scopes) | set(extra)))
                continue
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                target = self._resolve(response.headers["Location"], f"{what} redirect")
                continue
            if response.status_code in _TRANSIENT_STATUS:
                raise _Transient(f"{what}: {_error_detail(response)}", _retry_after(response))
            if response.status_code in (401, 403):
                raise RegistryError(self._denied(what, response))
            raise RegistryError(f"registry {self.registry}: {what}: {_error_detail(response)}")
        raise RegistryError(f"registry {self.registry}: {what}: too many redirects")

    def _transport_failure(self, exc: httpx.TransportError, what: str) -> Exception:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__context__, ssl.SSLCertVerificationError):
            return RegistryError(
                f"registry {self.registry}: TLS certificate not trusted ({text}); pass --ca-cert FILE "
                "(or --no-tls-verify for a test registry)"
            )
        if self._tls_verify and ("WRONG_VERSION_NUMBER" in text or "record layer failure" in text):
            return RegistryError(
                f"registry {self.registry}: {what}: no TLS on this port ({text}); for a plain-HTTP test registry "
                "pass --no-tls-verify"
            )
        return _Transient(f"{what}: {text}", transport=True)

    def _denied(self, what: str, response: httpx.Response) -> str:
        if self._credentials is None:
            return f"registry {self.registry}: {what}: {_error_detail(response)}; pass --username and --password-stdin"
        user = self._credentials[0]
        return f"registry {self.registry}: {what}: access denied for user {user!r} ({response.status_code})"

    def _request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``_send`` with retries and backoff for transient failures."""
        response: httpx.Response = self.retrying(lambda: self._send(method, url, **kwargs))
        return response

    def retrying(
        self,
        action: Callable[[], T],
        *,
        on_retry: Callable[[], None] | None = None,
        hint: str = "rerun the push: what landed is skipped",
    ) -> T:
        policy = self.options.retry
        for attempt in range(policy.attempts):
            try:
                return action()
            except _Transient as failure:
                if attempt + 1 >= policy.attempts:
                    raise RegistryError(
                        f"registry {self.registry}: {failure.message} (gave up after {policy.attempts} attempts; "
                        f"{hint})"
                    ) from failure
                self._sleep(policy.delay(attempt, failure.retry_after))
                if on_retry is not None:
                    on_retry()
        raise AssertionError("unreachable")

    # -- auth -----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: reach the registry, pick http(s), learn how it authenticates, and check the credentials."""
        response = self.retrying(self._probe, hint=f"is a registry running at {self.registry}?")
        if response.status_code == 200:
            return
        if response.status_code != 401:
            raise RegistryError(f"registry {self.registry}: GET /v2/: {_error_detail(response)}; not an OCI registry?")
        scheme, params = _challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryError(
                    f"registry {self.registry} requires a login (Basic); pass --username and --password-stdin"
                )
            self._auth = "basic"
            self._request("GET", f"{self.base}/v2/", scopes=(), expected=(200,))
        elif scheme == "bearer" and "realm" in params:
            realm = httpx.URL(params["realm"])
            if realm.host != httpx.URL(self.base).host:
                raise RegistryError(
                    f"registry {self.registry}: token service {realm.scheme}://{realm.host} is another host; "
                    "kit only talks to the registry named by --registry"
                )
            if realm.scheme != "https" and self._tls_verify:
                raise RegistryError(f"registry {self.registry}: token service {params['realm']} is not https")
            self._auth = "bearer"
            self._bearer = params
            if self._credentials is not None:
                self._token(())  # fail early on bad credentials
        else:
            raise RegistryError(f"registry {self.registry}: unsupported authentication challenge {scheme!r}")

    def _probe(self) -> httpx.Response:
        try:
            return self._send("GET", f"{self.base}/v2/", scopes=(), expected=(200, 401, 404))
        except _Transient as failure:
            # Without TLS verification a plain-HTTP registry is accepted, as skopeo --tls-verify=false does.
            if failure.transport and self._scheme == "https" and not self._tls_verify:
                self._scheme = "http"
                return self._send("GET", f"{self.base}/v2/", scopes=(), expected=(200, 401, 404))
            raise failure

    def _token(self, scopes: tuple[str, ...]) -> str:
        if scopes in self._tokens:
            return self._tokens[scopes]
        realm = self._bearer["realm"]
        query: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in self._bearer:
            query.append(("service", self._bearer["service"]))
        query += [("scope", scope) for scope in scopes]
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None

        def fetch() -> httpx.Response:
            try:
                response = self._http.get(realm, params=query, auth=auth)
            except httpx.TransportError as exc:
                raise self._transport_failure(exc, f"GET {realm}") from exc
            if response.status_code in _TRANSIENT_STATUS:
                raise _Transient(f"GET {realm}: {_error_detail(response)}", _retry_after(response))
            return response

        response = self.retrying(fetch)
        if response.status_code in (401, 403):
            raise RegistryError(self._denied(f"token request to {realm}", response))
        if response.status_code != 200:
            raise RegistryError(f"registry {self.registry}: token request to {realm}: {_error_detail(response)}")
        try:
            document = response.json()
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.registry}: token service {realm} returned no token")
        self._tokens[scopes] = token
        return token

    # -- blobs and manifests --------------------------------------------------------------------------------

    @staticmethod
    def scope(repository: str, actions: str = "pull,push") -> str:
        return f"repository:{repository}:{actions}"

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._request(
            "HEAD",
            f"{self.base}/v2/{repository}/blobs/{digest}",
            scopes=(self.scope(repository),),
            expected=(200, 404),
        )
        return bool(response.status_code == 200)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Cross-repository mount; False when the registry declined (the caller then uploads)."""
        response = self._request(
            "POST",
            f"{self.base}/v2/{repository}/blobs/uploads/",
            params={"mount": digest, "from": source},
            scopes=tuple(sorted((self.scope(repository), self.scope(source, "pull")))),
            expected=(201, 202),
        )
        if response.status_code == 202 and "Location" in response.headers:
            # An upload session was opened instead; close it, the upload opens its own.
            with contextlib.suppress(RegistryError, _Transient):
                url = self._resolve(response.headers["Location"], "upload location")
                self._send("DELETE", url, scopes=(self.scope(repository),), expected=(202, 204, 404))
        return bool(response.status_code == 201)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        open_chunks: Callable[[], AbstractContextManager[Iterator[bytes]]],
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Upload one blob; ``open_chunks`` yields its bytes afresh each attempt and raises at the end on a bad digest.

        Blobs up to ``monolithic_max`` are read whole, checked, then sent in one PUT;
        bigger ones go as PATCH chunks, and the closing PUT is sent only after the
        last chunk has been read and checked. Returns the bytes sent in the attempt that succeeded.
        """
        scopes = (self.scope(repository),)

        def attempt() -> int:
            started = self._send("POST", f"{self.base}/v2/{repository}/blobs/uploads/", scopes=scopes, expected=(202,))
            location = self._upload_location(started)
            try:
                with open_chunks() as chunks:
                    if size <= self.options.monolithic_max:
                        data = list(chunks)  # read whole (and so checked) before the one PUT
                        self._send(
                            "PUT",
                            location,
                            params={"digest": digest},
                            headers={"Content-Type": "application/octet-stream"},
                            content=data,
                            scopes=scopes,
                            expected=(201,),
                        )
                        if on_bytes is not None:
                            on_bytes(size)
                        return size
                    sent = 0
                    for piece in _rechunk(chunks, self.options.chunk_size):
                        piece_size = sum(len(part) for part in piece)
                        response = self._send(
                            "PATCH",
                            location,
                            headers={
                                "Content-Type": "application/octet-stream",
                                "Content-Range": f"{sent}-{sent + piece_size - 1}",
                            },
                            content=piece,
                            scopes=scopes,
                            expected=(202,),
                        )
                        location = self._upload_location(response)
                        sent += piece_size
                        if on_bytes is not None:
                            on_bytes(piece_size)
                # Every byte has been read and its digest checked (open_chunks raises otherwise): commit.
                self._send("PUT", location, params={"digest": digest}, scopes=scopes, expected=(201,))
                return sent
            except BaseException:
                with contextlib.suppress(RegistryError, _Transient):
                    self._send("DELETE", location, scopes=scopes, expected=(202, 204, 404))
                raise

        def landed_anyway() -> None:
            # A commit whose answer was lost may have landed; a retry would send the blob twice.
            if self.blob_exists(repository, digest):
                raise _Landed

        try:
            return int(self.retrying(attempt, on_retry=landed_anyway))
        except _Landed:
            return 0

    def _upload_location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: upload response has no Location header")
        return self._resolve(location, "upload location")

    def put_manifest(self, repository: str, reference: str, media_type: str, data: bytes, digest: str) -> None:
        """PUT a manifest or index by digest or tag; the registry must agree on its digest."""
        response = self._request(
            "PUT",
            f"{self.base}/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            content=[data],
            scopes=(self.scope(repository),),
            expected=(200, 201),
        )
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise RegistryError(
                f"registry {self.registry}: {repository}:{reference}: stored as {answered}, expected {digest}"
            )


def _pieces(content: Body | None) -> Iterator[bytes] | None:
    """A body as bounded pieces, each copied once here: httpcore re-slices the unsent rest of a buffer after
    every send(), which would copy a big buffer over and over."""
    if content is None:
        return None
    return (
        bytes(memoryview(part)[start : start + _PIECE]) for part in content for start in range(0, len(part), _PIECE)
    )


class _Landed(Exception):
    """Raised between retries when the blob turned out to be present already."""


def _rechunk(chunks: Iterator[bytes], size: int) -> Iterator[list[memoryview]]:
    """Regroup a stream of pieces into bodies of exactly ``size`` bytes (the last one shorter), without joining."""
    pending: list[memoryview] = []
    pending_size = 0
    for piece in chunks:
        view = memoryview(piece)
        while pending_size + len(view) >= size:
            take = size - pending_size
            yield [*pending, view[:take]]
            pending, pending_size, view = [], 0, view[take:]
        if len(view):
            pending.append(view)
            pending_size += len(view)
    if pending_size:
        yield pending
