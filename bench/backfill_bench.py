"""Backfill throughput on a real PostgreSQL: kit's batched, resumable backfill vs one set-based UPDATE.

Run: python bench/backfill_bench.py [--rows 1000000] [--batch-size 500]

Starts a throwaway PostgreSQL (Debian's postgresql), loads the same N rows into
two tables, times `kit apply` running the raw-linkset style backfill on one and
a single `UPDATE ... WHERE raw_linkset IS NULL` on the other, in the same run,
and prints both throughputs, their ratio (target >= 0.8) and the extrapolation
to the seed runbook's 5M observations (target well under 30 min; aim < 5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgserver import PgServer, find_pg_bin  # noqa: E402

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
table: obs_kit
key: id
tenant_column: tenant
predicate: raw_linkset IS NULL
set:
  raw_linkset: "'raw:' || document"
"""


def load(dsn: str, table: str, rows: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, tenant TEXT NOT NULL, document TEXT NOT NULL, "
            "raw_linkset TEXT)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT i, 't' || (i % 8), 'document-' || i FROM generate_series(1, {rows}) i"
        )
        conn.execute(f"VACUUM ANALYZE {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL binaries not found (apt-get install postgresql)")
    server = PgServer(bin_dir)
    server.start()
    try:
        dsn = server.create_database("bench")
        load(dsn, "obs_kit", args.rows)
        load(dsn, "obs_set", args.rows)
        with tempfile.TemporaryDirectory() as work_dir:
            work = Path(work_dir)
            (work / "job.yaml").write_text(JOB)
            (work / "spec.yaml").write_text(SPEC)
            kit = [sys.executable, "-m", "kitbuilder.cli"]
            subprocess.run([*kit, "keygen", "--out", str(work / "k")], check=True, capture_output=True)
            subprocess.run(
                [
                    *kit,
                    "build",
                    str(work / "spec.yaml"),
                    "--key",
                    str(work / "k.key"),
                    "--out",
                    str(work / "b.kit.tar.zst"),
                ],
                check=True,
                capture_output=True,
            )
            started = time.perf_counter()
            result = subprocess.run(
                [
                    *kit,
                    "apply",
                    str(work / "b.kit.tar.zst"),
                    "--key",
                    str(work / "k.pub"),
                    "--db",
                    dsn,
                    "--batch-size",
                    str(args.batch_size),
                    "--artifacts",
                    str(work / "artifacts"),
                    "--json",
                    "-q",
                ],
                capture_output=True,
                text=True,
            )
            kit_seconds = time.perf_counter() - started
            if result.returncode != 0:
                sys.exit(result.stderr)
            report = json.loads(result.stdout)
        job = report["steps"][0]
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("UPDATE obs_set SET raw_linkset = 'raw:' || document WHERE raw_linkset IS NULL")
            set_seconds = time.perf_counter() - started
        kit_rate = job["rowsProcessed"] / kit_seconds
        job_rate = job["rowsProcessed"] / (job["durationMs"] / 1000)
        set_rate = args.rows / set_seconds
        figures = {
            "rows": args.rows,
            "batchSize": args.batch_size,
            "kitApplySeconds": round(kit_seconds, 2),
            "kitBackfillLoopSeconds": job["durationMs"] / 1000,
            "setBasedUpdateSeconds": round(set_seconds, 2),
            "kitRowsPerSecond": round(kit_rate),
            "kitLoopRowsPerSecond": round(job_rate),
            "setBasedRowsPerSecond": round(set_rate),
            "ratio": round(kit_rate / set_rate, 3),
            "ratioLoopOnly": round(job_rate / set_rate, 3),
            "extrapolated5MMinutes": round(5_000_000 / kit_rate / 60, 2),
        }
        print(json.dumps(figures, indent=2))
        print(
            f"\nkit apply: {kit_rate:,.0f} rows/s ({kit_seconds:.1f} s incl. verify/start-up)  "
            f"set-based UPDATE: {set_rate:,.0f} rows/s ({set_seconds:.1f} s)  ratio {kit_rate / set_rate:.2f} "
            f"(target >= 0.8)\n5M rows at this rate: {figures['extrapolated5MMinutes']} min (runbook target < 30)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
