"""bench/run.py --quick runs to completion and writes every documented key (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pgserver import find_pg_bin

ROOT = Path(__file__).resolve().parents[2]

MIX_KEYS = {
    "inputs": ["files", "bytes", "kitBytes", "plainBytes"],
    "build": ["kitSeconds", "tarZstdSeconds", "kitMBps", "tarZstdMBps", "ratio", "peakRssMiB", "kitCpuSeconds"],
    "verify": ["kitSeconds", "zstdPlainSeconds", "ratio", "peakRssMiB", "kitCpuSeconds", "zstdPlainCpuSeconds"],
    "floor": ["buildSeconds", "buildCpuSeconds", "buildRatio", "verifySeconds", "verifyCpuSeconds", "verifyRatio"],
    "stockZstd": ["kitSeconds", "plainSeconds", "ratio"],
    "verifyVsPipeline": ["kitSeconds", "pipelineSeconds", "ratio"],
    "inspect": ["kitSeconds", "peakRssMiB"],
    "patch": [
        "changedFiles",
        "changedFileFraction",
        "changedFileBytes",
        "deltaBytes",
        "deltaBuild",
        "kitSeconds",
        "cpSyncSeconds",
        "fullBuildSeconds",
        "ratioVsCpSync",
        "speedupVsFullBuild",
        "peakRssMiB",
        "fullBuildPeakRssMiB",
        "patchedEqualsFullBuild",
    ],
    "metadata": [
        "SHA256SUMS",
        "manifest.json",
        "manifest.dsse.json",
        "sbom/kit.cdx.json",
        "index",
        "members",
        "total",
        "totalBytesPerMember",
    ],
}
PATCH_AT_SIZE_KEYS = [
    "sizeMiB",
    "files",
    "kitBytes",
    "changedFiles",
    "changedFileFraction",
    "changedFileBytes",
    "deltaBytes",
    "deltaBuild",
    "kitSeconds",
    "kitCpuSeconds",
    "cpSyncSeconds",
    "cpSyncCpuSeconds",
    "fullBuildSeconds",
    "fullBuildCpuSeconds",
    "ratioVsCpSync",
    "speedupVsFullBuild",
    "peakRssMiB",
    "fullBuildPeakRssMiB",
    "patchedEqualsFullBuild",
]
SUMMARY_KEYS = ["median", "min", "max", "runs"]
STEP_KEYS = ["ok", "exitCode", "seconds", "peakRssMiB", "error", "timedOut"]


def _summary(block: Any) -> None:
    assert sorted(block) == sorted(SUMMARY_KEYS)
    assert len(block["runs"]) == 1  # --quick runs each pair once
    assert block["min"] <= block["median"] <= block["max"]


@pytest.mark.slow
def test_quick_bench_run_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    results = json.loads(out.read_text())
    assert list(tmp_path.iterdir()) == [out]  # the work directory is gone
    assert results["schema"] == "kitbuilder-bench/v1"
    for key in (
        "startedAt",
        "host",
        "options",
        "mixes",
        "patchAtSize",
        "inspectFiles",
        "scale",
        "backfill",
        "targets",
        "seconds",
    ):
        assert key in results, key
    assert sorted(results["mixes"]) == ["few-big", "many-small"]
    for name, mix in results["mixes"].items():
        assert "error" not in mix, (name, mix.get("error"))
        for section, keys in MIX_KEYS.items():
            for key in keys:
                assert key in mix[section], (name, section, key)
        for section, key in (
            ("build", "kitSeconds"),
            ("build", "ratio"),
            ("verify", "ratio"),
            ("stockZstd", "ratio"),
            ("verifyVsPipeline", "ratio"),
            ("inspect", "kitSeconds"),
            ("patch", "ratioVsCpSync"),
            ("patch", "speedupVsFullBuild"),
            ("floor", "buildRatio"),
            ("floor", "verifyRatio"),
        ):
            _summary(mix[section][key])
        assert mix["patch"]["patchedEqualsFullBuild"] is True, name
        for section in ("build", "verify", "inspect", "patch"):
            assert mix[section]["peakRssMiB"] > 0, (name, section)
        assert mix["patch"]["changedFiles"] >= 1
        assert mix["patch"]["deltaBuild"]["ok"] is True
        assert mix["metadata"]["members"] > mix["inputs"]["files"]

    patch = results["patchAtSize"]
    assert "error" not in patch, patch.get("error")
    assert sorted(patch) == sorted(PATCH_AT_SIZE_KEYS)
    assert patch["sizeMiB"] == 4 and patch["files"] > 1 and patch["changedFiles"] >= 1
    for key in PATCH_AT_SIZE_KEYS:
        if key.endswith("Seconds") or key in ("ratioVsCpSync", "speedupVsFullBuild"):
            _summary(patch[key])
    assert patch["deltaBuild"]["ok"] is True and patch["deltaBuild"]["cpuSeconds"] > 0
    assert patch["kitCpuSeconds"]["median"] > 0 and patch["peakRssMiB"] > 0
    assert patch["patchedEqualsFullBuild"] is True

    inspect = results["inspectFiles"]
    assert inspect["build"]["ok"] is True and inspect["files"] == 1000
    _summary(inspect["kitSeconds"])

    scale = results["scale"]
    assert scale["files"] == 2000
    assert sorted(scale["steps"]) == ["build", "deltaBuild", "inspect", "patch", "verify"]
    for name, step in scale["steps"].items():
        assert sorted(step) == sorted(STEP_KEYS), name
        assert step["ok"] is True, (name, step["error"])
    assert scale["allOk"] is True
    assert scale["metadata"]["members"] > 2000

    backfill = results["backfill"]
    assert backfill["rows"] == 2000 and backfill["runs"]
    if find_pg_bin() is not None:
        for entry in backfill["runs"]:
            assert entry["run"]["ok"] is True, entry["run"]["error"]
            assert isinstance(entry["ratio"], float | int)

    rows = results["targets"]
    assert all(sorted(row) == ["measured", "met", "target", "value", "what"] for row in rows)
    identity = [row for row in rows if row["what"].endswith("patched kit == full build")]
    assert len(identity) == 3 and all(row["met"] is True for row in identity)  # two mixes and the patch target
    # The printed table has one line per target row.
    for row in rows:
        assert row["what"] in done.stdout
