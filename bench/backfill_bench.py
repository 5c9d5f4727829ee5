"""Backfill throughput on a real PostgreSQL: kit's batched, resumable backfill with 1 and 2 workers vs one UPDATE.

Run: python bench/backfill_bench.py [--rows 1000000] [--batch-size 5000] [--runs 3] [--workers 1,2]

Starts a throwaway PostgreSQL (the helper the tests use), and for each of
``--runs`` rounds loads the same N rows into a fresh table per contender, then
times, on the same rows: one set-based ``UPDATE … WHERE raw_linkset IS NULL``,
and ``kit apply --workers 1`` and ``--workers 2`` of the same backfill
(batched, resumable, state written per batch). Contenders alternate within a
round so drift on a noisy machine hits all of them alike.

Figures are noisy on a shared or loaded machine (the set-based UPDATE alone varies by a third
between rounds there): read the ranges, and rerun with more ``--runs`` before concluding. Each
batch kit runs is one statement in autocommit (find the batch, update it, move the cursor and
totals, add the batch row: one round trip), so the gap to the set-based UPDATE is the second
index scan of each batch, its commit and the job's count of what is left once the pass ends.

Ratios are throughputs relative to the set-based UPDATE (``set seconds / kit
seconds``; > 1 means kit was faster), medians over the rounds. ``backfill``
times the job as kit reports it (``durationMs``: splitting into ranges,
recording them, every batch, rescans; not verifying the kit or Python start-up);
``apply`` times the whole ``kit apply`` process. Targets: backfill ratio >= 1.0
with 2 workers, >= 0.8 with 1.

Writes bench/out/backfill.json with these keys:
  rows, batchSize, runs           what was measured (runs = rounds)
  setSeconds                      list: the set-based UPDATE's seconds, per round
  workers                         {"1": {...}, "2": {...}}, per worker count:
    backfillSeconds, applySeconds   lists, per round
    ratio                           median of setSeconds / backfillSeconds (the target's figure)
    ratioRange                      [min, max] of that over the rounds
    applyRatio                      median of setSeconds / applySeconds
    rowsPerSecond                   rows / median backfillSeconds
  targets                         {"1": 0.8, "2": 1.0}
  met                             {"1": bool, "2": bool}: ratio >= target (null without a target)
  ratio, ratioRange, met          with one --workers count only: that count's figures at the top level too
                                  (bench/run.py runs one count at a time)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgserver import PgServer, find_pg_bin  # noqa: E402

TARGETS = {1: 0.8, 2: 1.0}
SPEC = """\
apiVersion: kitbuilder/v1
name: backfill-bench
version: "1"
sequence: 1
expires: "2099-01-01"
product: bench
backfills:
  - id: raw-linkset
    source: job.yaml
"""
JOB = """\
table: obs
key: id
tenant_column: tenant
predicate: raw_linkset IS NULL
set:
  raw_linkset: "'raw:' || document"
"""
SET_BASED = "UPDATE obs SET raw_linkset = 'raw:' || document WHERE raw_linkset IS NULL"


def load(dsn: str, rows: int) -> None:
    """A fresh ``obs`` table of ``rows`` rows (the kit state tables go too), vacuumed and checkpointed."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute(
            "CREATE TABLE obs (id BIGINT PRIMARY KEY, tenant TEXT NOT NULL, document TEXT NOT NULL, raw_linkset TEXT)"
        )
        conn.execute(f"INSERT INTO obs SELECT i, 't' || (i % 8), 'document-' || i FROM generate_series(1, {rows}) i")
        conn.execute("VACUUM ANALYZE obs")
        conn.execute("CHECKPOINT")


def time_set_based(dsn: str) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(SET_BASED)
        return time.perf_counter() - started


def build_kit(work: Path) -> tuple[Path, Path]:
    (work / "job.yaml").write_text(JOB)
    (work / "spec.yaml").write_text(SPEC)
    kit = work / "b.kit.tar.zst"
    cli = [sys.executable, "-m", "kitbuilder.cli"]
    subprocess.run([*cli, "keygen", "--out", str(work / "k")], check=True, capture_output=True)
    subprocess.run(
        [*cli, "build", str(work / "spec.yaml"), "--key", str(work / "k.key"), "--out", str(kit)],
        check=True,
        capture_output=True,
    )
    return kit, work / "k.pub"


def time_kit(dsn: str, kit: Path, pub: Path, work: Path, workers: int, batch_size: int) -> tuple[float, float, int]:
    """(backfill seconds as kit reports them, whole apply seconds, rows processed)."""
    command = [sys.executable, "-m", "kitbuilder.cli", "apply", str(kit), "--key", str(pub), "--db", dsn]
    command += ["--batch-size", str(batch_size), "--workers", str(workers), "--artifacts", str(work / "artifacts")]
    started = time.perf_counter()
    result = subprocess.run([*command, "--json", "-q"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"kit apply --workers {workers} failed ({result.returncode}): {result.stderr}")
    (step,) = json.loads(result.stdout)["steps"]
    return step["durationMs"] / 1000, seconds, int(step["rowsProcessed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated (default 1,2)")
    args = parser.parse_args()
    try:
        counts = sorted({int(part) for part in args.workers.split(",")})
    except ValueError:
        sys.exit(f"--workers {args.workers}: expected worker counts such as 1,2")
    if not counts or min(counts) < 1:
        sys.exit(f"--workers {args.workers}: worker counts start at 1")
    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL binaries not found (apt-get install postgresql)")
    server = PgServer(bin_dir)
    server.start()
    set_seconds: list[float] = []
    kit_seconds: dict[int, list[tuple[float, float]]] = {count: [] for count in counts}
    try:
        dsn = server.create_database("bench")
        with tempfile.TemporaryDirectory() as work_dir:
            work = Path(work_dir)
            kit, pub = build_kit(work)
            for round_no in range(args.runs):
                order: list[int | str] = ["set", *counts]
                for contender in order if round_no % 2 == 0 else order[::-1]:
                    load(dsn, args.rows)
                    if contender == "set":
                        set_seconds.append(time_set_based(dsn))
                        continue
                    assert isinstance(contender, int)
                    backfill, whole, processed = time_kit(dsn, kit, pub, work, contender, args.batch_size)
                    if processed != args.rows:
                        sys.exit(f"--workers {contender} processed {processed} rows, expected {args.rows}")
                    kit_seconds[contender].append((backfill, whole))
    finally:
        server.stop()
    report(args, set_seconds, kit_seconds)


def report(
    args: argparse.Namespace, set_seconds: list[float], kit_seconds: dict[int, list[tuple[float, float]]]
) -> None:
    figures: dict[str, object] = {
        "rows": args.rows,
        "batchSize": args.batch_size,
        "runs": args.runs,
        "setSeconds": [round(s, 3) for s in set_seconds],
        "targets": {str(k): v for k, v in TARGETS.items()},
    }
    per_workers: dict[str, object] = {}
    met: dict[str, bool | None] = {}
    for workers, samples in kit_seconds.items():
        ratios = [s / b for s, (b, _) in zip(set_seconds, samples, strict=True)]
        apply_ratios = [s / w for s, (_, w) in zip(set_seconds, samples, strict=True)]
        backfill_median = statistics.median(b for b, _ in samples)
        per_workers[str(workers)] = {
            "backfillSeconds": [round(b, 3) for b, _ in samples],
            "applySeconds": [round(w, 3) for _, w in samples],
            "ratio": round(statistics.median(ratios), 3),
            "ratioRange": [round(min(ratios), 3), round(max(ratios), 3)],
            "applyRatio": round(statistics.median(apply_ratios), 3),
            "rowsPerSecond": round(args.rows / backfill_median),
        }
        target = TARGETS.get(workers)
        met[str(workers)] = statistics.median(ratios) >= target if target is not None else None
    figures["workers"] = per_workers
    figures["met"] = met
    if len(kit_seconds) == 1:
        (only,) = kit_seconds
        entry = per_workers[str(only)]
        assert isinstance(entry, dict)
        figures.update(workerCount=only, ratio=entry["ratio"], ratioRange=entry["ratioRange"], target=TARGETS.get(only))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "backfill.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"\nset-based UPDATE of {args.rows:,} rows: median {statistics.median(set_seconds):.2f} s")
    for workers in kit_seconds:
        entry = per_workers[str(workers)]
        assert isinstance(entry, dict)
        low, high = entry["ratioRange"]
        goal = f", target >= {TARGETS[workers]}" if workers in TARGETS else ""
        print(
            f"kit backfill --workers {workers}: ratio {entry['ratio']:.2f} (range {low:.2f}-{high:.2f}{goal}), "
            f"whole kit apply {entry['applyRatio']:.2f}, {entry['rowsPerSecond']:,} rows/s"
        )


if __name__ == "__main__":
    main()
