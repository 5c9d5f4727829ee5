"""What an SBOM lists, counted: ``summarize_sbom`` (components by type, licence, supplier) and ``listed_files``.

Both read documents that are already parsed and validated (by ``check``, or rendered by ``render``), so they
tolerate missing optional fields instead of reporting them, and import no schema or SPDX library.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kitbuilder.core.sbom.model import SbomError, SbomSummary


def summarize_sbom(document: dict[str, Any], *, where: str = "SBOM") -> SbomSummary:
    """Count what a (parsed, validated) CycloneDX or SPDX document lists; SbomError if it is neither."""
    types: Counter[str] = Counter()
    licenses: Counter[str] = Counter()
    suppliers: Counter[str] = Counter()
    if "bomFormat" in document:
        for component in _cyclonedx_components(document):
            types[str(component.get("type"))] += 1
            licenses.update(_cyclonedx_licenses(component))
            supplier = component.get("supplier")
            if isinstance(supplier, dict) and isinstance(supplier.get("name"), str):
                suppliers[supplier["name"]] += 1
    elif "spdxVersion" in document:
        packages = [p for p in document.get("packages", []) if isinstance(p, dict)]
        files = [f for f in document.get("files", []) if isinstance(f, dict)]
        for package in packages:
            purpose = package.get("primaryPackagePurpose")
            types[purpose.lower() if isinstance(purpose, str) else "package"] += 1
            declared = _spdx_license(package.get("licenseDeclared"))
            license_ = declared if declared is not None else _spdx_license(package.get("licenseConcluded"))
            if license_ is not None:
                licenses[license_] += 1
            supplier = _spdx_actor(package.get("supplier"))
            if supplier is not None:
                suppliers[supplier] += 1
        for file in files:
            types["file"] += 1
            license_ = _spdx_license(file.get("licenseConcluded"))
            if license_ is not None:
                licenses[license_] += 1
    else:
        raise SbomError(where, "$", "neither CycloneDX JSON (no bomFormat) nor SPDX JSON (no spdxVersion)")
    return SbomSummary(
        component_count=sum(types.values()),
        by_type=dict(sorted(types.items())),
        licenses=dict(sorted(licenses.items())),
        suppliers=dict(sorted(suppliers.items())),
    )


def listed_files(document: dict[str, Any]) -> dict[str, str]:
    """Kit path → SHA-256 of every file a (validated) kit SBOM lists, to compare with the signed manifest."""
    return {
        component["name"]: hashes[0]["content"]
        for component in _cyclonedx_components(document)
        if component.get("type") == "file"
        and str(component.get("bom-ref", "")).startswith("file:")
        and isinstance(hashes := component.get("hashes"), list)
        and hashes
        and hashes[0].get("alg") == "SHA-256"
    }


def _cyclonedx_components(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every component, nested ones included, in document order; not metadata.component or tools."""
    stack: list[Any] = list(reversed(document.get("components", [])))
    while stack:
        component = stack.pop()
        if isinstance(component, dict):
            yield component
            nested = component.get("components", [])
            if isinstance(nested, list):
                stack.extend(reversed(nested))


def _cyclonedx_licenses(component: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    entries = component.get("licenses", [])
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("expression"), str):
            found.add(entry["expression"])
        license_ = entry.get("license")
        if isinstance(license_, dict):
            value = license_.get("id", license_.get("name"))
            if isinstance(value, str):
                found.add(value)
    return found


def _spdx_license(value: Any) -> str | None:
    # NOASSERTION says nothing about the licence; NONE is a statement ("no licence") and is counted.
    if isinstance(value, str) and value and value != "NOASSERTION":
        return value
    return None


def _spdx_actor(value: Any) -> str | None:
    """``Organization: Example Inc. (ops@example.com)`` → ``Example Inc.``."""
    if not isinstance(value, str) or value == "NOASSERTION":
        return None
    name = value.split(":", 1)[1] if value.startswith(("Organization:", "Person:", "Tool:")) else value
    name = re.sub(r"\s*\([^()]*\)\s*$", "", name).strip()
    return name or None
