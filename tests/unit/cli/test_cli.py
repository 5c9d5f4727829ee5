"""The CLI package: thin (no paths, small modules), one failure document, and output that is the result's own.

Each command parses, calls one operation and renders its typed result; these tests hold that shape and check
that the JSON a command prints is exactly its result's ``to_json`` (the schemas in kitbuilder/schemas are the
contract; tests/integration/test_json_outputs.py runs every command against them).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest

import kitbuilder
from kitbuilder.cli import main
from kitbuilder.cli.errors import exit_on_error, fail
from kitbuilder.core import schemas
from kitbuilder.errors import CheckFailedError, FailedRunError, RegistryError, TrustError, UsageError
from kitbuilder.ops import patching, release
from kitbuilder.ops.pushing import RegistryAccess
from kitbuilder.ops.trust_choices import TrustChoices
from tests.factories.cli import KitEnv, run_kit
from tests.factories.keys import ed25519_key, write_pair
from tests.factories.kits import write_spec

CLI = Path(kitbuilder.__file__).parent / "cli"
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
# What touching the file system looks like; the CLI leaves all of it to ops.
PATH_CALLS = {"stat", "lstat", "exists", "is_dir", "is_file", "open", "read_text", "read_bytes", "write_text"}
PATH_CALLS |= {"write_bytes", "mkdir", "unlink", "rename", "replace", "iterdir", "glob", "resolve", "rmdir"}


def _modules() -> list[Path]:
    return sorted(CLI.glob("*.py"))


def test_the_cli_package_is_small_modules_of_short_functions() -> None:
    for module in _modules():
        source = module.read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 250, f"{module.name} passes 250 lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.end_lineno is not None:
                assert node.end_lineno - node.lineno < 80, f"{module.name}:{node.lineno} {node.name} passes 80 lines"


def test_the_cli_takes_no_paths_itself() -> None:
    for module in _modules():
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            assert name not in PATH_CALLS, f"{module.name}:{node.lineno} calls {name}(): leave paths to ops"


def test_python_dash_m_and_the_console_script_reach_the_same_command() -> None:
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "kit"]
    assert entry.load() is main
    done = subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, f"kit, version {kitbuilder.__version__}", "")


def test_a_failed_run_prints_its_report_beside_the_failure_document(capsys: pytest.CaptureFixture[str]) -> None:
    report = {"reportVersion": 1, "status": "succeeded", "steps": [{"id": "21-101", "status": "succeeded"}]}
    cause = RegistryError("registry r:5000: access denied for user 'pusher'")
    with pytest.raises(SystemExit) as exited:
        fail(FailedRunError(cause, report=report), as_json=True)
    assert exited.value.code == 11
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document == {
        **report,
        "ok": False,
        "error": {"kind": "registry", "exitCode": 11, "message": "registry r:5000: access denied for user 'pusher'"},
    }
    assert err == "kit: registry error: registry r:5000: access denied for user 'pusher'\n"


def test_a_plain_error_prints_only_the_failure_document(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, exit_on_error(True):
        raise TrustError("manifest.dsse.json: 0 valid signature(s)\n\x1b[2Jspoofed")
    assert exited.value.code == 3
    out, err = capsys.readouterr()
    message = "manifest.dsse.json: 0 valid signature(s)\\x0a\\x1b[2Jspoofed"  # escaped: one line
    assert json.loads(out) == {"ok": False, "error": {"kind": "trust", "exitCode": 3, "message": message}}
    assert err.count("\n") == 1, "one line on stderr, whatever the message held"


def test_a_failed_runs_report_is_fixed_when_the_error_is_built() -> None:
    report = {"status": "failed", "steps": []}
    failed = FailedRunError(CheckFailedError("backfill paused"), report=report)
    report["status"] = "changed later"
    assert failed.report["status"] == "failed"
    with pytest.raises(TypeError):
        failed.report["status"] = "x"  # type: ignore[index]


def _normalised(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, sort_keys=True)


def test_build_json_is_the_release_results_own(kit_env: KitEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    base = kit_env.kit("base.kit.tar.zst")
    direct = release.build_release(release.ReleaseRequest(spec=kit_env.spec, key_paths=(kit_env.ed_key,), out=base))
    assert isinstance(direct, release.FullRelease)
    printed = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", base, "--json", env=EPOCH)
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == _normalised(direct.to_json()) + "\n"
    assert schemas.first_error("build-report", direct.to_json()) is None

    kit_env.spec.write_text(kit_env.spec.read_text().replace("sequence: 1", "sequence: 2"))
    delta = kit_env.kit("delta.kit.tar.zst")
    request = release.ReleaseRequest(spec=kit_env.spec, key_paths=(kit_env.ed_key,), out=delta, delta_from=base)
    built = release.build_release(request)
    assert isinstance(built, release.DeltaRelease) and built.to_json()["fullOut"] is None
    printed = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", delta, "--delta-from", base, "--json")
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == _normalised(built.to_json()) + "\n"
    assert schemas.first_error("build-report", built.to_json()) is None


def test_patch_refuses_to_write_an_installed_directory_elsewhere(kit_env: KitEnv, tmp_path: Path) -> None:
    work = tmp_path / "work"
    installed = work / "installed"
    installed.mkdir(parents=True)
    trust = TrustChoices(keys=(kit_env.ed_pub,), now=datetime.now(UTC), no_state=True)
    with pytest.raises(UsageError, match=r"is an installed kit directory: patch it with --in-place") as caught:
        patching.patch(installed, work / "delta.kit.tar.zst", output=work / "new.kit.tar.zst", trust=trust)
    assert caught.value.exit_code == 2
    assert list(work.iterdir()) == [installed] and list(installed.iterdir()) == []


def test_trust_choices_wire_the_file_backed_anti_rollback_store(tmp_path: Path) -> None:
    _, pub = write_pair(ed25519_key("release"), tmp_path / "release")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    inputs = TrustChoices(keys=(pub,), now=now, state_dir=tmp_path / "state", allow_downgrade=True, max_members=7)
    options = inputs.verify_options()
    assert options.freshness is not None and options.freshness.directory == str(tmp_path / "state")
    assert options.freshness.allow_downgrade and options.now == now and options.caps.max_members == 7
    assert TrustChoices(keys=(pub,), now=now, no_state=True).verify_options().freshness is None
    assert TrustChoices(now=now).optional_policy() is None


def test_a_registry_password_never_shows_in_a_repr() -> None:
    access = RegistryAccess(username="pusher", password="s3cret-pass")
    assert "s3cret-pass" not in repr(access) and "pusher" in repr(access)


def test_now_is_judged_only_where_trust_is_given(kit_env: KitEnv) -> None:
    spec = write_spec(kit_env.root / "other")
    out = kit_env.root / "other.kit.tar.zst"
    assert run_kit("build", spec, "--key", kit_env.ed_key, "--out", out, env=EPOCH).exit_code == 0
    unjudged = run_kit("inspect", out, "--now", "yesterday")
    assert unjudged.exit_code == 0, unjudged.output
    judged = run_kit("inspect", out, "--now", "yesterday", "--key", kit_env.ed_pub)
    assert (judged.exit_code, judged.stderr.splitlines()[0][:24]) == (2, "kit: usage error: --now ")


def test_the_command_group_loads_no_operation_it_does_not_run() -> None:
    probe = "import sys, kitbuilder.cli; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    heavy = {"httpx", "psycopg", "rich", "kitbuilder.ops.build", "kitbuilder.ops.apply", "kitbuilder.ops.images"}
    assert not loaded & heavy, f"`kit --version` loads {sorted(loaded & heavy)}"
