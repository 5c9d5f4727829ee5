"""The validators generated ahead (kitbuilder/core/schema_code/) are current, used, and never used stale.

They are what fastjsonschema.compile would build at run time (see kitbuilder/core/schemas.py); this test is what
keeps them so: it fails once a schema or the installed fastjsonschema changes until
`python scripts/compile_schemas.py` has been run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fastjsonschema
import pytest

from kitbuilder.core import schemas

ROOT = Path(__file__).resolve().parents[3]


def test_generated_validators_are_what_fastjsonschema_generates_now() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile_schemas.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_schema_validated_at_run_time_is_generated_ahead() -> None:
    calls = set()
    for path in (ROOT / "kitbuilder").rglob("*.py"):
        text = path.read_text("utf-8")
        for call in ("schemas.validate(", "schemas.first_error("):
            start = 0
            while (at := text.find(call, start)) >= 0:
                start = at + len(call)
                argument = text[start:].lstrip().split(",", 1)[0]
                calls.update(part.strip().strip('"') for part in argument.split(" if ") if part.strip().startswith('"'))
                if " else " in argument:
                    calls.add(argument.rsplit(" else ", 1)[1].strip().strip('"'))
    assert calls, "no schemas.validate call found"
    assert calls <= set(schemas.COMPILED_SCHEMAS)


@pytest.mark.parametrize("name", schemas.COMPILED_SCHEMAS)
def test_the_generated_validator_is_the_one_used(name: str) -> None:
    generated = schemas._generated(name)
    assert generated is not None
    assert schemas._fast(name) is generated


def test_a_validator_generated_from_another_schema_text_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "kit-spec"
    original = schemas._schema_text
    edited = original(name) + "\n"  # the same schema in other bytes: still not the text the module was made from
    monkeypatch.setattr(schemas, "_schema_text", lambda n: edited if n == name else original(n))
    assert schemas._generated(name) is None


def test_a_validator_generated_by_another_fastjsonschema_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastjsonschema, "VERSION", "0.0.0")
    assert schemas._generated("manifest-v2") is None


def test_the_formatter_leaves_the_generated_modules_as_generated() -> None:
    # They are compared byte for byte with what scripts/compile_schemas.py writes: a `ruff format` over the tree (as
    # at a merge) made every one of them stale, so the validators were compiled at run time again.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(ROOT / "kitbuilder" / "core" / "schema_code")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would reformat" not in result.stdout + result.stderr
