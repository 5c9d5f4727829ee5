"""The package keeps the shape STYLE.md asks for, and every module imports on its own.

scripts/archcheck.py finds nothing: no module over 500 lines, no function over 80 (SQL text aside), no
import from a higher layer, no import cycle between modules. Its graph cannot see every cycle the
interpreter meets (importing ``a.b.c`` first runs ``a.b/__init__``), so each module is also imported
first, in an interpreter where nothing of kitbuilder is loaded yet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_IMPORT_EACH_FIRST = """
import importlib, pathlib, sys, traceback
root = pathlib.Path(sys.argv[1])
names = []
for path in sorted((root / "kitbuilder").rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__main__":
        continue
    if parts[-1] == "__init__":
        parts.pop()
    names.append(".".join(parts))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "kitbuilder" or m.startswith("kitbuilder.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_archcheck_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "archcheck.py"), str(ROOT / "kitbuilder")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_every_module_imports_first() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST, str(ROOT)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", result.stdout
