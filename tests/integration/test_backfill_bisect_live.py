"""Bisecting a failed backfill batch on a live table quarantines only a row that fails on its own.

Between the bisection's look at what still matches and its retry, the site may add or change rows. When one row
was left, the retry used to cover the whole rest of the batch, so a row the site put back there meanwhile failed it
and the row left (which applies fine) was quarantined in its place. The retry is now the range of exactly that row.
Held at exact points with KIT_FAULT_WAIT, real PostgreSQL, no sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path

from kitbuilder.apply.db import connect
from tests.factories.apply_runs import Applier, wait_for
from tests.factories.backfill_kits import write_kit_source
from tests.factories.cli import KitEnv, run_kit

# Row 300 fails (its payload is not an integer); every other row applies.
FAILS_AT_300 = "CASE WHEN id = 300 THEN CAST(CAST(payload AS INTEGER) AS TEXT) ELSE 'v2:' || payload END"


def _applier(kit_env: KitEnv, root: Path) -> Applier:
    spec = write_kit_source(root / "src", "int", done=FAILS_AT_300)
    kit = root / "live.kit.tar.zst"
    built = run_kit("build", spec, "--key", kit_env.ed_key, "--out", kit)
    assert built.exit_code == 0, built.output
    return Applier(kit, kit_env.ed_pub, root / "artifacts")


def _site(pg_dsn: str, sql: str) -> int:
    site = connect(pg_dsn)
    try:
        return site.execute(sql)
    finally:
        site.close()


def test_a_row_the_site_puts_back_during_a_bisection_does_not_quarantine_the_row_left(
    kit_env: KitEnv, pg_dsn: str, tmp_path: Path
) -> None:
    applier = _applier(kit_env, tmp_path)
    failed, looked = tmp_path / "failed", tmp_path / "looked"
    run = applier.start(
        pg_dsn, "--json", env={"KIT_FAULT_WAIT": f"backfill-bisect:1:{failed};backfill-bisect-keys:1:{looked}"}
    )
    try:
        wait_for(Path(f"{failed}.waiting"), run)  # the batch (275, 300] failed on row 300 and rolled back
        # The site finishes every row of the batch but 290, row 300 included: only 290 still matches.
        assert _site(pg_dsn, "UPDATE items SET done = 'site' WHERE id > 275 AND id <= 300 AND id <> 290") == 24
        failed.touch()
        wait_for(Path(f"{looked}.waiting"), run)  # the bisection found one row left: 290
        # Meanwhile the site puts row 300 back: it matches again, and still fails.
        assert _site(pg_dsn, "UPDATE items SET done = NULL WHERE id = 300") == 1
        looked.touch()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        failed.touch()
        looked.touch()
        if run.returncode is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, stderr
    (step,) = [s for s in json.loads(stdout)["steps"] if s["kind"] == "backfill"]
    assert step["rowsFailed"] == 1
    database = connect(pg_dsn)
    try:
        # Row 300 fails on its own and is the one quarantined; row 290 applied once, as every row outside the batch.
        assert database.query("SELECT row_key FROM kit_backfill_quarantine WHERE job = 'touch'") == [("300",)]
        assert database.query("SELECT done, attempts FROM items WHERE id = 290") == [("v2:payload-290", 1)]
        assert database.query("SELECT id FROM items WHERE done IS NULL") == [(300,)]
        assert database.query_value("SELECT COUNT(*) FROM items WHERE done = 'site'") == 23
        bad = database.query(
            "SELECT id FROM items WHERE (id <= 275 OR id > 300) AND (done IS DISTINCT FROM 'v2:' || payload "
            "OR attempts <> 1)"
        )
        assert bad == []
    finally:
        database.close()
