"""``kit build``: a full kit, or (with a base kit) a delta against it; the decision lives here, not in the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.errors import UsageError
from kitbuilder.ops import build as build_op
from kitbuilder.ops import delta as delta_op
from kitbuilder.ops.trust_inputs import load_private


@dataclass(frozen=True, kw_only=True)
class ReleaseRequest:
    """What to build: the spec, the signing key files, where to write, and the build choices."""

    spec: Path
    key_paths: tuple[Path, ...]
    out: Path
    level: int = 3
    threads: int | None = None
    builder_id: str | None = None
    provenance: bool = True
    sigstore_bundle: bool = False
    delta_from: Path | None = None  # a base kit: write a delta against it
    full_out: Path | None = None  # with delta_from: also keep the full new kit here
    max_members: int | None = None  # with delta_from: the base's (and new kit's) file cap when read back
    delta_frames: str | None = None  # with delta_from: "content" (default) or "verbatim" (docs/delta.md)


@dataclass(frozen=True)
class FullRelease:
    """A full kit written to ``out``."""

    out: Path
    result: build_op.BuildResult

    def to_json(self) -> dict[str, Any]:
        manifest = self.result.manifest
        provenance = self.result.detached_provenance
        return {
            "ok": True,
            "out": str(self.out),
            "bytes": self.result.kit_size,
            "files": len(manifest.files),
            "payloadBytes": manifest.payload_bytes,
            "signers": list(self.result.signers),
            "kit": manifest.kit.to_json(),
            "sha256": self.result.kit_sha256,
            "metadata": list(self.result.metadata),
            "provenance": str(provenance) if provenance else None,
            "images": [image.to_json() for image in manifest.images],
        }


@dataclass(frozen=True)
class DeltaRelease:
    """A delta kit written to ``out`` against ``base``; the full new kit kept at ``full_out`` when asked."""

    out: Path
    base: Path
    full_out: Path | None
    result: delta_op.DeltaResult

    def to_json(self) -> dict[str, Any]:
        delta = self.result
        return {
            "ok": True,
            "out": str(self.out),
            "delta": True,
            "bytes": delta.delta_bytes,
            "added": list(delta.added),
            "changed": list(delta.changed),
            "removed": list(delta.removed),
            "reusedFromBase": delta.reused,
            "fullOut": str(self.full_out) if self.full_out else None,
        }


Release = FullRelease | DeltaRelease


def build_release(
    request: ReleaseRequest,
    *,
    on_bytes: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Release:
    """Build and sign what ``request`` asks for; progress callbacks report the full build's payload bytes.

    SOURCE_DATE_EPOCH, when set, fixes the build time (reproducible builds).

    Raises what ops.build and ops.delta raise (SpecError, UsageError, TrustError, HostIOError, ...).
    """
    private_keys = [load_private(path) for path in request.key_paths]
    options = build_op.BuildOptions(
        level=request.level,
        threads=request.threads,
        source_date_epoch=build_op.source_date_epoch_from_env(),
        builder_id=request.builder_id,
        provenance=request.provenance,
        sigstore_bundle=request.sigstore_bundle,
    )
    if request.delta_frames is not None and request.delta_from is None:
        raise UsageError("--delta-frames: only with --delta-from (it says how a delta carries changed files)")
    if request.delta_from is not None:
        delta = delta_op.build_delta(
            request.spec,
            keys=private_keys,
            base_path=request.delta_from,
            output=request.out,
            full_output=request.full_out,
            options=options,
            max_members=request.max_members,
            mode=request.delta_frames or "content",
        )
        return DeltaRelease(request.out, request.delta_from, request.full_out, delta)
    result = build_op.build_kit(
        request.spec,
        keys=private_keys,
        output=request.out,
        options=options,
        on_bytes=on_bytes,
        on_start=on_start,
    )
    return FullRelease(request.out, result)
