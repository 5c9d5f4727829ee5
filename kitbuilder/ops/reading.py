"""Commands that read a kit and report on it: verify a kit file, take one SBOM out of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kitbuilder.ops import verify as verify_op

if TYPE_CHECKING:
    # Loaded by export_sbom: `kit verify` imports this module and needs no SBOM code.
    from kitbuilder.ops import sbom as sbom_op
    from kitbuilder.ops.trust_choices import TrustChoices


def verify_file(
    kit: Path,
    options: verify_op.VerifyOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> verify_op.VerifyReport:
    """Verify ``kit`` in full (ops.verify.verify_kit); ``on_start`` first gets the file's size for a progress bar."""
    if on_start is not None and kit.exists():
        on_start(kit.stat().st_size)
    return verify_op.verify_kit(kit, options, on_bytes=on_bytes)


@dataclass(frozen=True)
class SbomExport:
    """An SBOM taken out of a kit; ``out`` is where it was written, None when it goes to standard output."""

    sbom: sbom_op.ExtractedSbom
    out: Path | None

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, **self.sbom.to_json(), "out": str(self.out)}


def export_sbom(kit: Path, trust: TrustChoices, *, subject: str | None, output: Path | None) -> SbomExport:
    """Read the kit's SBOM (or the shipped one describing ``subject``) and write it atomically to ``output``.

    Signatures are checked when trust was given; raises what ops.sbom raises.
    """
    from kitbuilder.ops import sbom as sbom_op

    extracted = sbom_op.extract_sbom(kit, policy=trust.optional_policy(), subject=subject, caps=trust.caps)
    if output is not None:
        sbom_op.save_sbom(extracted, output)
    return SbomExport(extracted, output)
