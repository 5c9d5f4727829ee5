"""``kit patch``: patch a kit file into a new one, or an installed kit directory in place; the choice lives here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.core.manifest import KitInfo
from kitbuilder.errors import UsageError
from kitbuilder.ops import patch_dir, patch_file
from kitbuilder.ops.trust_choices import TrustChoices


@dataclass(frozen=True)
class FilePatch:
    """A kit file patched into ``result.output`` (the base itself with --in-place)."""

    result: patch_file.PatchResult

    @property
    def kit(self) -> KitInfo:
        return self.result.manifest.kit

    def to_json(self) -> dict[str, Any]:
        result = self.result
        return {
            "ok": True,
            "out": str(result.output),
            "directory": False,
            "kit": self.kit.to_json(),
            "copiedFromBase": result.copied_from_base,
            "copiedFromDelta": result.copied_from_delta,
            "rebuilt": result.rebuilt,
            "bytes": result.bytes_written,
            "alreadyPatched": result.already_patched,
        }


@dataclass(frozen=True)
class DirectoryPatch:
    """An installed kit directory patched in place."""

    directory: Path
    result: patch_dir.DirPatchResult

    @property
    def kit(self) -> KitInfo:
        return self.result.manifest.kit

    def to_json(self) -> dict[str, Any]:
        result = self.result
        return {
            "ok": True,
            "out": str(self.directory),
            "directory": True,
            "kit": self.kit.to_json(),
            "reused": result.reused,
            "written": result.written,
            "removed": result.removed,
            "rolledForward": result.rolled_forward,
            "alreadyPatched": result.already_patched,
        }


Patched = FilePatch | DirectoryPatch


def patch(base: Path, delta: Path, *, output: Path | None, trust: TrustChoices) -> Patched:
    """Apply the verified ``delta`` to ``base``: a kit file, or a directory a kit was unpacked into.

    ``output`` None patches in place (a kit file is replaced atomically; a directory is patched through its
    journal); a directory can only be patched in place. Raises UsageError for that, and what ops.delta and
    ops.patch_dir raise.
    """
    if base.is_dir():
        if output is not None:
            raise UsageError(f"{base} is an installed kit directory: patch it with --in-place")
        directory = patch_dir.patch_directory(
            base, delta, options=trust.verify_options(), allow_downgrade=trust.allow_downgrade
        )
        return DirectoryPatch(base, directory)
    result = patch_file.patch_kit(
        base,
        delta,
        output=base if output is None else output,
        options=trust.verify_options(),
        allow_downgrade=trust.allow_downgrade,
    )
    return FilePatch(result)
