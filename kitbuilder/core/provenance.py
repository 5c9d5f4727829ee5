"""SLSA provenance v1 for kits (https://slsa.dev/spec/v1.0/provenance).

Two statements share one predicate:

- ``attestations/provenance.dsse.json`` inside the kit, whose subjects are the
  kit's signed metadata (``manifest.json`` and ``SHA256SUMS``): a member of the
  kit cannot name the digest of the file that contains it;
- ``KIT.intoto.jsonl`` beside the kit (the SLSA convention), whose subject is
  the kit file itself, so a pipeline can publish it next to the artefact.

The predicate is plain JSON written here (see statement.py for why not via
the in-toto-attestation library).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kitbuilder.errors import FormatError

PROVENANCE_PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://kitbuilder.dev/build/kit/v1"
PROVENANCE_MEMBER = "attestations/provenance.dsse.json"
DETACHED_SUFFIX = ".intoto.jsonl"
LOCAL_BUILDER_ID = "https://kitbuilder.dev/builders/local"


@dataclass(frozen=True)
class Dependency:
    """One build input: what the kit was made from, by digest (docs/provenance.md)."""

    name: str  # the spec component's id (or the image's reference)
    uri: str  # where it came from, relative to the spec's directory (stays the same across checkouts)
    sha256: str  # the component's inventory digest (its SHA256SUMS lines), or the image's manifest digest

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "digest": {"sha256": self.sha256}}


@dataclass(frozen=True)
class Provenance:
    spec_path: str
    spec_sha256: str
    options: dict[str, Any]
    dependencies: tuple[Dependency, ...]
    builder_id: str
    tool: str
    started_on: str
    finished_on: str
    invocation_id: str | None = None
    ci: dict[str, str] = field(default_factory=dict)

    def predicate(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"startedOn": self.started_on, "finishedOn": self.finished_on}
        if self.invocation_id is not None:
            metadata["invocationId"] = self.invocation_id
        internal: dict[str, Any] = {"tool": self.tool}
        if self.ci:
            internal["ci"] = dict(self.ci)
        return {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "spec": {"path": self.spec_path, "digest": {"sha256": self.spec_sha256}},
                    "options": self.options,
                },
                "internalParameters": internal,
                "resolvedDependencies": [d.to_json() for d in self.dependencies],
            },
            "runDetails": {"builder": {"id": self.builder_id}, "metadata": metadata},
        }


@dataclass(frozen=True)
class BuilderIdentity:
    id: str
    invocation_id: str | None
    ci: dict[str, str]


def builder_from_environment(explicit: str | None, environ: Mapping[str, str] | None = None) -> BuilderIdentity:
    """The builder id: ``--builder-id`` if given, else derived from the CI system's variables, else local.

    Only the variables that identify the run are recorded; secrets never are.
    """
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        repo = env.get("GITHUB_REPOSITORY", "")
        workflow = env.get("GITHUB_WORKFLOW_REF")
        derived = f"{server}/{workflow}" if workflow else f"{server}/{repo}/.github/workflows"
        run = env.get("GITHUB_RUN_ID")
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1")
        invocation = f"{server}/{repo}/actions/runs/{run}/attempts/{attempt}" if run else None
        ci = {k: env[k] for k in ("GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_RUN_ID") if env.get(k)}
        return BuilderIdentity(explicit or derived, invocation, ci)
    if env.get("GITLAB_CI") == "true":
        server = env.get("CI_SERVER_URL", "https://gitlab.com")
        project = env.get("CI_PROJECT_PATH", "")
        derived = f"{server}/{project}/-/runners/{env.get('CI_RUNNER_ID', 'unknown')}"
        job_url = env.get("CI_JOB_URL")
        ci = {k: env[k] for k in ("CI_PROJECT_PATH", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME", "CI_JOB_ID") if env.get(k)}
        return BuilderIdentity(explicit or derived, job_url, ci)
    return BuilderIdentity(explicit or LOCAL_BUILDER_ID, None, {})


@dataclass(frozen=True)
class ProvenanceView:
    """What `kit inspect --provenance` shows, read back from a predicate (shape checked, values as signed)."""

    builder_id: str
    build_type: str
    spec_path: str
    spec_sha256: str
    options: dict[str, Any]
    dependencies: tuple[Dependency, ...]
    started_on: str | None
    finished_on: str | None
    invocation_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "builderId": self.builder_id,
            "buildType": self.build_type,
            "spec": {"path": self.spec_path, "sha256": self.spec_sha256},
            "options": self.options,
            "inputs": [d.to_json() for d in self.dependencies],
            "startedOn": self.started_on,
            "finishedOn": self.finished_on,
            "invocationId": self.invocation_id,
        }


def read_predicate(predicate: Mapping[str, Any], *, what: str) -> ProvenanceView:
    """Check the parts of a SLSA v1 predicate kit reads; FormatError names the field."""

    def need(obj: Any, key: str, kind: type, path: str) -> Any:
        value = obj.get(key) if isinstance(obj, Mapping) else None
        if not isinstance(value, kind):
            raise FormatError(f"{what}: predicate.{path}{key}: expected a {kind.__name__}")
        return value

    def optional(obj: Mapping[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise FormatError(f"{what}: predicate.{path}{key}: expected a string")
        return value

    definition = need(predicate, "buildDefinition", dict, "")
    build_type = need(definition, "buildType", str, "buildDefinition.")
    external = need(definition, "externalParameters", dict, "buildDefinition.")
    run = need(predicate, "runDetails", dict, "")
    builder = need(run, "builder", dict, "runDetails.")
    builder_id = need(builder, "id", str, "runDetails.builder.")
    spec = external.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    spec_digest = spec.get("digest")
    spec_digest = spec_digest if isinstance(spec_digest, dict) else {}
    dependencies: list[Dependency] = []
    raw = definition.get("resolvedDependencies", [])
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise FormatError(f"{what}: predicate.buildDefinition.resolvedDependencies: expected a list")
    for number, item in enumerate(raw):
        digest = item.get("digest") if isinstance(item, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(sha, str):
            raise FormatError(f"{what}: resolvedDependencies[{number}]: needs digest.sha256")
        where = f"buildDefinition.resolvedDependencies[{number}]."
        name, uri = optional(item, "name", where), optional(item, "uri", where)
        dependencies.append(Dependency(name=name or "", uri=uri or "", sha256=sha))
    metadata = run.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    options = external.get("options")
    return ProvenanceView(
        builder_id=builder_id,
        build_type=build_type,
        spec_path=optional(spec, "path", "buildDefinition.externalParameters.spec.") or "",
        spec_sha256=optional(spec_digest, "sha256", "buildDefinition.externalParameters.spec.digest.") or "",
        options=options if isinstance(options, dict) else {},
        dependencies=tuple(dependencies),
        started_on=optional(metadata, "startedOn", "runDetails.metadata."),
        finished_on=optional(metadata, "finishedOn", "runDetails.metadata."),
        invocation_id=optional(metadata, "invocationId", "runDetails.metadata."),
    )
