"""Evidence of a run: report.json, its SHA-256 beside it, and metrics in Prometheus text format."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kitbuilder.atomic import write_atomic
from kitbuilder.core import jsonio


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(report: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")

    kit = report["kit"]["name"]
    steps = report.get("steps", [])
    backfills = [s for s in steps if s.get("kind") == "backfill"]
    migrations = [s for s in steps if s.get("kind") == "migration"]
    metric(
        "kit_documents_processed_total",
        "counter",
        "Rows updated by backfill jobs (all runs).",
        [({"kit": kit, "job": s["id"]}, float(s.get("rowsProcessed", 0))) for s in backfills],
    )
    metric(
        "kit_documents_failed_total",
        "counter",
        "Rows quarantined by backfill jobs (all runs).",
        [({"kit": kit, "job": s["id"]}, float(s.get("rowsFailed", 0))) for s in backfills],
    )
    metric(
        "kit_documents_remaining",
        "gauge",
        "Rows still matching a backfill's predicate after the run.",
        [
            (
                {"kit": kit, "job": s["id"], **({"metric": s["metric"]} if s.get("metric") else {})},
                float(s.get("remainingAfter", 0)),
            )
            for s in backfills
        ],
    )
    metric(
        "kit_backfill_rows_per_second",
        "gauge",
        "Backfill throughput in this run.",
        [({"kit": kit, "job": s["id"]}, float(s.get("rowsPerSecond") or 0)) for s in backfills],
    )
    metric(
        "kit_migration_duration_seconds",
        "gauge",
        "Duration of each migration applied in this run.",
        [
            ({"kit": kit, "migration": s["id"]}, s.get("durationMs", 0) / 1000.0)
            for s in migrations
            if s.get("status") == "succeeded"
        ],
    )
    checks = report.get("checks", {}).get("after", [])
    metric(
        "kit_check_passed",
        "gauge",
        "1 when a declared check passed.",
        [({"kit": kit, "check": c["id"]}, 1.0 if c["passed"] else 0.0) for c in checks],
    )
    metric(
        "kit_apply_success",
        "gauge",
        "1 when the run finished successfully.",
        [({"kit": kit}, 1.0 if report["status"] == "succeeded" else 0.0)],
    )
    metric(
        "kit_lock_wait_seconds",
        "gauge",
        "Time spent waiting for the apply lock.",
        [({"kit": kit}, float(report.get("lockWaitSeconds", 0.0)))],
    )
    return "\n".join(lines) + "\n"


def write_evidence(artifacts: Path, report: dict[str, Any], *, now: datetime | None = None) -> tuple[Path, str]:
    """Write the run's evidence directory; return it and the report's SHA-256."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    directory = artifacts / stamp
    directory.mkdir(parents=True, exist_ok=False)
    body = jsonio.dump_pretty(report)
    digest = hashlib.sha256(body).hexdigest()
    write_atomic(directory / "report.json", body)
    write_atomic(directory / "report.json.sha256", f"{digest}  report.json\n".encode())
    write_atomic(directory / "metrics.prom", metrics_text(report).encode())
    return directory, digest
