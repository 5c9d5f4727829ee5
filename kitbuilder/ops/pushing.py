"""Pushing a verified kit's images to a registry, and checking a registry can be reached before relying on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitbuilder.ops.images import PushResult
    from kitbuilder.ops.verify import VerifyOptions


@dataclass(frozen=True, kw_only=True)
class RegistryAccess:
    """How to reach a registry: TLS checking and credentials (the password is never shown in a repr)."""

    tls_verify: bool = True
    ca_cert: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def push(
    kit: Path,
    registry: str,
    options: VerifyOptions,
    access: RegistryAccess,
    *,
    refs: Sequence[str] = (),
    on_bytes: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> PushResult:
    """Verify ``kit``, then push its images (all, or those named in ``refs``) to ``registry`` (HOST[:PORT])."""
    # The registry client (httpx) loads only when something is pushed.
    from kitbuilder.ops import images as images_op

    return images_op.push_images(
        kit,
        registry,
        options,
        tls_verify=access.tls_verify,
        ca_cert=access.ca_cert,
        username=access.username,
        password=access.password,
        refs=refs or None,
        on_bytes=on_bytes,
        on_start=on_start,
    )


def check_registry(registry: str, access: RegistryAccess) -> None:
    """Reach ``registry`` once and check its TLS and the credentials; raises RegistryError, failing fast."""
    from kitbuilder.oci.registry import RegistryClient, RetryPolicy, TransferOptions

    with RegistryClient(
        registry,
        tls_verify=access.tls_verify,
        ca_cert=access.ca_cert,
        username=access.username,
        password=access.password,
        options=TransferOptions(retry=RetryPolicy(attempts=2)),  # a check, not a transfer: fail fast
    ) as client:
        client.ping()
