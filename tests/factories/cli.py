"""Running `kit` in-process as a user would, and the test environment every CLI test starts from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from kitbuilder.cli import main


@dataclass
class KitEnv:
    root: Path
    spec: Path
    ed_key: Path
    ed_pub: Path
    ec_key: Path
    ec_pub: Path
    other_pub: Path

    def kit(self, name: str = "demo.kit.tar.zst") -> Path:
        return self.root / name


def run_kit(*args: Any, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI in-process; exit code and output as a user would see them."""
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def run_json(*args: Any) -> tuple[int, dict[str, Any]]:
    result = run_kit(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def apply_json(kit_env: KitEnv, kit: Path, db_url: str, *extra: Any) -> tuple[int, dict[str, Any], str]:
    """`kit apply --json` with the test key and a per-test artifacts dir: (exit code, report, stderr)."""
    result = run_kit(
        "apply",
        kit,
        "--key",
        kit_env.ed_pub,
        "--db",
        db_url,
        "--artifacts",
        kit_env.root / "artifacts",
        "--json",
        *extra,
    )
    return result.exit_code, json.loads(result.stdout), result.stderr
