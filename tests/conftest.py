from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories.cli import KitEnv, run_kit
from tests.factories.keys import ecdsa_key, ed25519_key, write_pair
from tests.factories.kits import write_spec

# A suite started in the background by a shell without job control inherits SIGINT ignored, and an
# ignored signal stays ignored across exec: every kit child would then ignore the SIGINT the signal
# tests send it. A Python-level handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own anti-rollback state, never the user's."""
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path_factory.mktemp("kit-state")))


@pytest.fixture
def kit_env(tmp_path: Path) -> KitEnv:
    spec = write_spec(tmp_path)
    ed_key, ed_pub = write_pair(ed25519_key("release"), tmp_path / "release")
    ec_key, ec_pub = write_pair(ecdsa_key("ops"), tmp_path / "ops")
    _, other_pub = write_pair(ed25519_key("stranger"), tmp_path / "stranger")
    return KitEnv(tmp_path, spec, ed_key, ed_pub, ec_key, ec_pub, other_pub)


@pytest.fixture
def built_kit(kit_env: KitEnv) -> Path:
    """A kit signed by the ed25519 and ECDSA test keys."""
    out = kit_env.kit()
    result = run_kit(
        "build",
        kit_env.spec,
        "--key",
        kit_env.ed_key,
        "--key",
        kit_env.ec_key,
        "--out",
        out,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One real PostgreSQL server per test session (Debian's postgresql; .ci/run installs it)."""
    import os

    from tests.pgserver import PgServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("KIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL binaries not found and KIT_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql")
    server = PgServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(pg_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session server for each test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return str(pg_server.create_database(name))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every apply test runs on the embedded SQLite default and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'site.db'}"
    return str(request.getfixturevalue("pg_dsn"))
