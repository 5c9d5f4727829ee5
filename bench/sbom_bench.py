"""Kit SBOM render + validate at scale, against cyclonedx-python-lib's JSON validator on the same document.

Run: python bench/sbom_bench.py [--files 1000,10000,50000] [--repeat 2] [--reference-timeout 60]

For each file count, on a generated kit (four components, two images, one shipped SBOM):
  render   render_kit_sbom: build the document, validate it against CycloneDX 1.6, write the bytes
                                                                        (target: 10,000 files < 5 s)
  check    check_sbom on those bytes: parse, validate, bom-ref check, summary
  cdxlib   cyclonedx-python-lib JsonStrictValidator(V1_6).validate_str on the same bytes, in a child
           process stopped after --reference-timeout seconds (it is quadratic in the component count)
The one-off compilation of the 1.6 validator (first use in a process) is reported separately. Each
in-process measurement is the best of --repeat runs; results go to bench/out/sbom.json.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kitbuilder.core import sbom  # noqa: E402

REFERENCE = """\
import sys, time
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
text = open(sys.argv[1]).read()
start = time.perf_counter()
error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
print(time.perf_counter() - start, error is None)
"""


def kit(files: int) -> dict[str, Any]:
    components = [
        sbom.KitComponent("21-101-shard-index", "migration", phase="21-101"),
        sbom.KitComponent("observations", "seed"),
        sbom.KitComponent("runner", "sbom", subject="registry.local/stellaops/runner"),
        sbom.KitComponent("operator", "doc"),
    ]
    entries = [
        sbom.SbomFile(
            f"{('migrations', 'seeds', 'sbom', 'docs')[n % 4]}/{components[n % 4].id}/f-{n:06d}.dat",
            hashlib.sha256(n.to_bytes(8, "little")).hexdigest(),
            1024 + n,
            components[n % 4].role,
            components[n % 4].id,
        )
        for n in range(files - 1)
    ]
    entries.append(sbom.SbomFile("sbom/runner/runner.spdx.json", "ab" * 32, 2000, "sbom", "runner"))
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
        "components": components,
        "files": entries,
        "images": images,
        "shipped": shipped,
    }


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def reference(document: bytes, timeout: float) -> float | None:
    """cyclonedx-python-lib's validate_str time (seconds), or None when it did not finish within ``timeout``."""
    with tempfile.NamedTemporaryFile(suffix=".cdx.json") as file:
        file.write(document)
        file.flush()
        try:
            result = subprocess.run(
                [sys.executable, "-c", REFERENCE, file.name],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None
    seconds, valid = result.stdout.split()
    if valid != "True":
        raise SystemExit("cyclonedx-python-lib refused the kit SBOM")
    return float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="1000,10000,50000", help="comma-separated file counts")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reference-timeout", type=float, default=60.0)
    args = parser.parse_args()

    start = time.perf_counter()
    sbom.render_kit_sbom(**kit(1))
    first = time.perf_counter() - start
    results: dict[str, object] = {"compileAndFirstRenderSeconds": first, "sizes": []}
    rows: list[dict[str, Any]] = []
    for files in (int(n) for n in args.files.split(",")):
        inputs = kit(files)
        document = sbom.render_kit_sbom(**inputs)
        render_s = best(args.repeat, functools.partial(sbom.render_kit_sbom, **inputs))
        check_s = best(args.repeat, functools.partial(sbom.check_sbom, document, sbom.KIT_SBOM_PATH))
        reference_s = reference(document, args.reference_timeout)
        row: dict[str, Any] = {
            "files": files,
            "bytes": len(document),
            "renderSeconds": render_s,
            "checkSeconds": check_s,
            "cyclonedxLibSeconds": reference_s,
            "target": "render < 5 s at 10,000 files",
        }
        rows.append(row)
        print(f"... {files} files done", file=sys.stderr)
    results["sizes"] = rows
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "sbom.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"one-off: compiling the CycloneDX 1.6 validator + first render: {first:.2f} s")
    print(f"{'files':>7} {'SBOM MB':>8} {'render+validate':>16} {'check_sbom':>11} {'cyclonedx-python-lib':>21}")
    for row in rows:
        cdx = row["cyclonedxLibSeconds"]
        cdx_text = f"{cdx:.2f} s" if isinstance(cdx, float) else f"> {args.reference_timeout:.0f} s (stopped)"
        print(
            f"{row['files']:>7} {row['bytes'] / 1e6:>8.1f} {row['renderSeconds']:>14.2f} s "
            f"{row['checkSeconds']:>9.2f} s {cdx_text:>21}"
        )


if __name__ == "__main__":
    main()
