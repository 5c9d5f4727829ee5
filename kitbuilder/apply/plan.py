"""The apply plan: a verified kit's migrations, seeds and backfills in the order they run.

Phases sort naturally ("21-101" < "21-102" < "21-103"); within a phase,
migrations run first (in spec order), then seeds, then backfills. Components
without a phase run after every phased one. The plan is built only from a
verified manifest and the staging directory its bytes were extracted to.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitbuilder.core.manifest import Manifest
from kitbuilder.core.spec import load_backfill_job
from kitbuilder.errors import SpecError

_ROLE_ORDER = {"migration": 0, "seed": 1, "backfill": 2}
LAST_PHASE = "~"  # sorts after every phase name the spec allows


def phase_key(phase: str) -> tuple[tuple[int, Any], ...]:
    if phase == LAST_PHASE:
        return ((2, ""),)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", phase) if part)


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # migration | seed | backfill
    phase: str
    checksum: str
    files: dict[str, Path]
    options: dict[str, Any] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        path = self.files.get(name)
        return path.read_text("utf-8") if path is not None else None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    checks: tuple[dict[str, Any], ...]

    @property
    def phases(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for step in self.steps:
            seen.setdefault(step.phase, None)
        return tuple(seen)


def _component_files(manifest: Manifest, component_id: str, staging: Path) -> dict[str, tuple[Path, str]]:
    """Relative name within the component → (staged path, sha256)."""
    result: dict[str, tuple[Path, str]] = {}
    files = [f for f in manifest.files if f.component == component_id]
    if not files:
        return result
    prefix = _common_dir([f.path for f in files])
    for entry in files:
        relative = entry.path[len(prefix) + 1 :] if prefix else entry.path
        result[relative] = (staging.joinpath(*entry.path.split("/")), entry.sha256)
    return result


def _common_dir(paths: list[str]) -> str:
    parts = [p.split("/")[:-1] for p in paths]
    common: list[str] = []
    for segments in zip(*parts, strict=False):
        if all(s == segments[0] for s in segments):
            common.append(segments[0])
        else:
            break
    return "/".join(common)


def _checksum(files: dict[str, tuple[Path, str]], extra: dict[str, Any]) -> str:
    lines = [f"{name}:{digest}" for name, (_, digest) in sorted(files.items())]
    lines += [f"option:{key}={extra[key]!r}" for key in sorted(extra)]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def build_plan(manifest: Manifest, staging: Path) -> Plan:
    steps: list[tuple[tuple[Any, ...], Step]] = []
    for position, component in enumerate(manifest.components):
        if component.role not in _ROLE_ORDER:
            continue
        files = _component_files(manifest, component.id, staging)
        options = dict(component.options)
        phase = component.phase or LAST_PHASE
        if component.role == "migration":
            up_name = options.get("up", "up.sql")
            if up_name not in files:
                raise SpecError(f"migration {component.id}: the kit has no {up_name} for it")
            named = {
                role: files[options.get(role, f"{role}.sql")][0]
                for role in ("up", "verify", "revert")
                if options.get(role, f"{role}.sql") in files
            }
            if options.get("transactional", True) is False and "verify" not in named and not options.get("idempotent"):
                raise SpecError(
                    f"migration {component.id}: non-transactional migrations must declare idempotent: true "
                    "or ship a verify script, so a crash can be resolved"
                )
            step = Step(component.id, "migration", phase, _checksum(files, options), named, options)
        elif component.role == "seed":
            data = {name: path for name, (path, _) in files.items() if name.endswith((".ndjson", ".csv", ".jsonl"))}
            step = Step(component.id, "seed", phase, _checksum(files, options), data, options)
        else:
            yaml_files = [name for name in files if name.endswith((".yaml", ".yml"))]
            job_name = "job.yaml" if "job.yaml" in files else (yaml_files[0] if len(yaml_files) == 1 else None)
            if job_name is None:
                raise SpecError(f"backfill {component.id}: the kit has no job YAML for it")
            job_path = files[job_name][0]
            job = load_backfill_job(job_path.read_text("utf-8"), f"{component.id}/{job_name}")
            step = Step(
                component.id, "backfill", phase, _checksum(files, options), {"job": job_path}, {**options, **job}
            )
        steps.append(((phase_key(phase), _ROLE_ORDER[component.role], position), step))
    steps.sort(key=lambda item: item[0])
    return Plan(steps=tuple(step for _, step in steps), checks=manifest.checks)
