"""Evidence of a run: report.json, its SHA-256 beside it, and metrics in Prometheus text format."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kitbuilder.apply.results import ApplyReport, BackfillResult, MigrationResult
from kitbuilder.atomic import DIR_SUFFIX, TEMP_MARK, TempPattern, clear_stale, fsync_path, scratch_dir, write_atomic
from kitbuilder.core import jsonio
from kitbuilder.errors import HostIOError


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Samples = list[tuple[dict[str, str], float]]


@dataclass(frozen=True)
class Metric:
    """One metric family of metrics.prom: its HELP and TYPE lines and one sample per label set."""

    name: str
    kind: str  # "counter" | "gauge"
    help_text: str
    samples: Samples

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{self.name}{{{rendered}}} {value:g}" if rendered else f"{self.name} {value:g}")
        return out


def metrics_text(report: ApplyReport) -> str:
    """The run's metrics in Prometheus text format: backfill progress, migration durations, checks, the run."""
    backfills = [s for s in report.steps if isinstance(s, BackfillResult)]
    metrics = [*_backfill_metrics(report.kit_name, backfills), *_run_metrics(report)]
    return "\n".join(line for metric in metrics for line in metric.lines()) + "\n"


def _backfill_metrics(kit: str, backfills: list[BackfillResult]) -> list[Metric]:
    def job_labels(step: BackfillResult) -> dict[str, str]:
        return {"kit": kit, "job": step.id, **({"tenant": step.tenant} if step.tenant is not None else {})}

    metrics = [
        Metric(
            "kit_documents_processed_total",
            "counter",
            "Rows updated by backfill jobs (all runs).",
            [(job_labels(s), float(s.rows_processed)) for s in backfills],
        ),
        Metric(
            "kit_documents_failed_total",
            "counter",
            "Rows quarantined by backfill jobs (all runs).",
            [(job_labels(s), float(s.rows_failed)) for s in backfills],
        ),
        Metric(
            "kit_documents_remaining",
            "gauge",
            "Rows still matching a backfill's predicate after the run (label metric: the job's metric name).",
            [
                ({**job_labels(s), **({"metric": s.metric} if s.metric else {})}, float(s.remaining_after))
                for s in backfills
            ],
        ),
    ]
    # Each job's own gauge, named by its `metric:` option (docs/apply.md section 4).
    by_name: dict[str, list[BackfillResult]] = {}
    for step in backfills:
        if step.metric:
            by_name.setdefault(step.metric, []).append(step)
    for name, steps in sorted(by_name.items()):
        metrics.append(
            Metric(
                name,
                "gauge",
                "Rows still matching the backfill's predicate after the run.",
                [(job_labels(step), float(step.remaining_after)) for step in steps],
            )
        )
    metrics.append(
        Metric(
            "kit_backfill_rows_per_second",
            "gauge",
            "Backfill throughput in this run.",
            [(job_labels(s), float(s.rows_per_second or 0)) for s in backfills],
        )
    )
    return metrics


def _run_metrics(report: ApplyReport) -> list[Metric]:
    kit = report.kit_name
    migrations = [s for s in report.steps if isinstance(s, MigrationResult)]
    return [
        Metric(
            "kit_migration_duration_seconds",
            "gauge",
            "Duration of each migration applied in this run.",
            [
                ({"kit": kit, "migration": s.id}, (s.duration_ms or 0) / 1000.0)
                for s in migrations
                if s.status == "succeeded"
            ],
        ),
        Metric(
            "kit_check_passed",
            "gauge",
            "1 when a declared check passed.",
            [({"kit": kit, "check": c.id}, 1.0 if c.passed else 0.0) for c in report.checks_after],
        ),
        Metric(
            "kit_apply_success",
            "gauge",
            "1 when the run finished successfully.",
            [({"kit": kit}, 1.0 if report.status == "succeeded" else 0.0)],
        ),
        Metric(
            "kit_lock_wait_seconds",
            "gauge",
            "Time spent waiting for the apply lock.",
            [({"kit": kit}, float(report.lock_wait_seconds or 0.0))],
        ),
    ]


def write_evidence(artifacts: Path, report: ApplyReport, *, now: datetime | None = None) -> tuple[Path, str]:
    """Write the run's evidence directory; return it and the report's SHA-256.

    A dry run writes the same three files (its report says ``"dryRun": true`` and ``"status":
    "dry-run"``), into a directory whose name ends in ``-dry-run`` so it is never mistaken for
    the evidence of a change.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    directory = artifacts / (f"{stamp}-dry-run" if report.dry_run else stamp)
    # The `--json` document (schemas/apply-report.schema.json) without `evidence`, which names this file's
    # own digest: so report.json plus that block validates against the published schema.
    body = jsonio.dump_pretty({"ok": report.error is None, **report.to_json()})
    digest = hashlib.sha256(body).hexdigest()
    artifacts.mkdir(parents=True, exist_ok=True)
    # Built in a private directory and renamed into place whole: a full disk or a kill part-way leaves no
    # timestamped directory that is empty or lacks a file (an evidence dir either holds all its files or is absent).
    clear_stale(artifacts, _STAGING, is_dir=True)
    with scratch_dir(artifacts, _STAGING, what=directory) as staging:
        write_atomic(staging / "report.json", body)
        write_atomic(staging / "report.json.sha256", f"{digest}  report.json\n".encode())
        if not report.dry_run:
            write_atomic(staging / "metrics.prom", metrics_text(report).encode())
        staging.chmod(0o755)
        os.rename(staging, directory)
        fsync_path(artifacts)
    return directory, digest


# Evidence directories being written (leftovers of a killed run are removed by the next one).
_STAGING = TempPattern(f".evidence{TEMP_MARK}", DIR_SUFFIX)


def check_artifacts_dir(artifacts: Path) -> None:
    """Fail before the first statement if the evidence cannot be written (HostIOError, exit 12).

    Creates ``artifacts`` (it is where the user asked evidence to go) and probes that a file can be
    created in it; the probe is removed.
    """
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".kit-probe-", dir=artifacts)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        raise HostIOError(
            f"--artifacts {artifacts}: evidence cannot be written there ({exc.strerror or exc}); nothing was applied"
        ) from exc
