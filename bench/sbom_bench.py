"""Kit SBOM at scale, and the check of a large shipped SPDX document.

Run: python bench/sbom_bench.py [--files 1000,10000,100000] [--spdx-files 1000,4000,16000] [--repeat 2]
       [--reference-timeout 60]

For each file count, on a generated kit (four components, two images, one shipped SBOM):
  inventory  component_inventories: count, bytes and SHA256SUMS-line digest of every component, one pass
  render     render_kit_sbom: build the document, validate it against CycloneDX 1.6, write the bytes (its size
             follows the components, not the files)
  check      check_sbom on those bytes: parse, validate, bom-ref check, summary
For each SPDX file count, on a generated SPDX 2.3 document (one package holding the files by hasFiles, a tenth as
many dependency packages, a CONTAINS relationship per file):
  spdx       check_sbom: field checks, spdx-tools' parser, the links in linear time (kitbuilder.core.sbom.spdx_links)
  spdx-tools spdx-tools' own JsonLikeDictParser + validate_full_spdx_document on the same document, in a child
             process stopped after --reference-timeout seconds (quadratic: what kit did before)
Each in-process measurement is the best of --repeat runs; results go to bench/out/sbom.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kitbuilder.core import sbom  # noqa: E402

SPDX_REFERENCE = """\
import json, sys, time
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
document = json.load(open(sys.argv[1]))
start = time.perf_counter()
messages = validate_full_spdx_document(JsonLikeDictParser().parse(document))
print(time.perf_counter() - start, not messages)
"""
COMPONENTS = (
    sbom.KitComponent("21-101-shard-index", "migration", phase="21-101"),
    sbom.KitComponent("observations", "seed"),
    sbom.KitComponent("runner", "sbom", subject="registry.local/stellaops/runner"),
    sbom.KitComponent("operator", "doc"),
)
DIRS = ("migrations", "seeds", "sbom", "docs")


@dataclass(frozen=True)
class File:
    path: str
    sha256: str
    size: int
    component: str


def kit_files(files: int) -> list[File]:
    entries = [
        File(
            f"{DIRS[n % 4]}/{COMPONENTS[n % 4].id}/f-{n:07d}.dat",
            hashlib.sha256(n.to_bytes(8, "little")).hexdigest(),
            1024 + n,
            COMPONENTS[n % 4].id,
        )
        for n in range(files - 1)
    ]
    entries.append(File("sbom/runner/runner.spdx.json", "ab" * 32, 2000, "runner"))
    return entries


def kit(files: list[File]) -> dict[str, Any]:
    inventories = sbom.component_inventories(files)
    images = [
        sbom.SbomImage(
            f"registry.local/stellaops/{name}:2025.11",
            "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
            "application/vnd.oci.image.index.v1+json",
            ("linux/amd64", "linux/arm64"),
            50_000_000,
        )
        for name in ("runner", "concelier")
    ]
    shipped = [
        sbom.ShippedSbom("sbom/runner/runner.spdx.json", "runner", "registry.local/stellaops/runner", "SPDX", "2.3")
    ]
    return {
        "name": "bench",
        "version": "1.0.0",
        "product": "bench",
        "tool_version": "0.1.0",
        "created": "2025-12-01T00:00:00Z",
        "components": [
            sbom.KitComponent(c.id, c.role, c.phase, c.subject, inventories.get(c.id, sbom.Inventory()))
            for c in COMPONENTS
        ],
        "images": images,
        "shipped": shipped,
        "shipped_sha256": {"sbom/runner/runner.spdx.json": "ab" * 32},
    }


def spdx_document(files: int) -> dict[str, Any]:
    file_list = [
        {
            "SPDXID": f"SPDXRef-File-{n}",
            "fileName": f"./lib/f{n}.py",
            "checksums": [{"algorithm": "SHA1", "checksumValue": hashlib.sha1(str(n).encode()).hexdigest()}],
            "licenseConcluded": "MIT",
            "copyrightText": "NOASSERTION",
        }
        for n in range(files)
    ]
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": "SPDXRef-App",
            "name": "app",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": True,
            "hasFiles": [f["SPDXID"] for f in file_list],
            "packageVerificationCode": {"packageVerificationCodeValue": "0" * 40},
            "licenseConcluded": "MIT",
            "copyrightText": "NOASSERTION",
        }
    ]
    packages += [
        {
            "SPDXID": f"SPDXRef-Package-{n}",
            "name": f"dep{n}",
            "versionInfo": "1.0",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseDeclared": "Apache-2.0",
        }
        for n in range(files // 10)
    ]
    relationships = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-App"}
    ]
    relationships += [
        {"spdxElementId": "SPDXRef-App", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": p["SPDXID"]}
        for p in packages[1:]
    ]
    relationships += [
        {"spdxElementId": "SPDXRef-App", "relationshipType": "CONTAINS", "relatedSpdxElement": f["SPDXID"]}
        for f in file_list
    ]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "bench",
        "documentNamespace": "https://example.com/spdx/bench",
        "creationInfo": {"created": "2025-01-01T00:00:00Z", "creators": ["Tool: bench"]},
        "packages": packages,
        "files": file_list,
        "relationships": relationships,
    }


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def spdx_reference(document: bytes, timeout: float) -> float | None:
    """spdx-tools' own parse + validate time (seconds), or None when it did not finish within ``timeout``."""
    with tempfile.NamedTemporaryFile(suffix=".spdx.json") as file:
        file.write(document)
        file.flush()
        try:
            result = subprocess.run(
                [sys.executable, "-c", SPDX_REFERENCE, file.name],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None
    seconds, valid = result.stdout.split()
    if valid != "True":
        raise SystemExit("spdx-tools refused the generated SPDX document")
    return float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="1000,10000,100000", help="comma-separated kit file counts")
    parser.add_argument("--spdx-files", default="1000,4000,16000", help="comma-separated SPDX file counts")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reference-timeout", type=float, default=60.0)
    args = parser.parse_args()

    start = time.perf_counter()
    sbom.render_kit_sbom(**kit(kit_files(1)))
    first = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    for count in (int(n) for n in args.files.split(",")):
        files = kit_files(count)
        inputs = kit(files)
        document = sbom.render_kit_sbom(**inputs)
        rows.append(
            {
                "files": count,
                "bytes": len(document),
                "inventorySeconds": best(args.repeat, functools.partial(sbom.component_inventories, files)),
                "renderSeconds": best(args.repeat, functools.partial(sbom.render_kit_sbom, **inputs)),
                "checkSeconds": best(args.repeat, functools.partial(sbom.check_sbom, document, sbom.KIT_SBOM_PATH)),
            }
        )
        print(f"... kit SBOM, {count} files done", file=sys.stderr)
    spdx_rows: list[dict[str, Any]] = []
    for count in (int(n) for n in args.spdx_files.split(",")):
        data = json.dumps(spdx_document(count)).encode()
        spdx_rows.append(
            {
                "files": count,
                "bytes": len(data),
                "checkSeconds": best(args.repeat, functools.partial(sbom.check_sbom, data, "bench.spdx.json")),
                "spdxToolsSeconds": spdx_reference(data, args.reference_timeout),
            }
        )
        print(f"... SPDX, {count} files done", file=sys.stderr)
    results = {"compileAndFirstRenderSeconds": first, "sizes": rows, "spdx": spdx_rows}
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "sbom.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"one-off: compiling the CycloneDX 1.6 validator + first render: {first:.2f} s")
    print(f"{'files':>8} {'SBOM KB':>8} {'inventories':>12} {'render+validate':>16} {'check_sbom':>11}")
    for row in rows:
        print(
            f"{row['files']:>8} {row['bytes'] / 1e3:>8.1f} {row['inventorySeconds']:>10.2f} s "
            f"{row['renderSeconds']:>14.2f} s {row['checkSeconds']:>9.2f} s"
        )
    print(f"\n{'SPDX files':>10} {'MB':>6} {'check_sbom':>11} {'spdx-tools alone':>17}")
    for row in spdx_rows:
        reference = row["spdxToolsSeconds"]
        shown = f"{reference:.2f} s" if isinstance(reference, float) else f"> {args.reference_timeout:.0f} s (stopped)"
        print(f"{row['files']:>10} {row['bytes'] / 1e6:>6.1f} {row['checkSeconds']:>9.2f} s {shown:>17}")


if __name__ == "__main__":
    main()
