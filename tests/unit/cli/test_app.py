"""The ``kit`` group loads a command's module only when that command is used (kitbuilder/cli/app.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from kitbuilder.cli.app import COMMAND_MODULES, main


def test_the_table_names_exactly_the_commands_the_modules_register() -> None:
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"kitbuilder.cli.{module}")
    assert set(main.commands) == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        callback = main.commands[name].callback
        assert callback is not None
        assert callback.__module__ == f"kitbuilder.cli.{module}", name


def test_inspect_does_not_import_the_apply_stack() -> None:
    probe = (
        "import sys\n"
        "from kitbuilder.cli import main\n"
        "try:\n"
        "    main(['inspect', '--help'], prog_name='kit')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "loaded = sorted(m for m in ('kitbuilder.cli.apply', 'kitbuilder.cli.images', 'kitbuilder.cli.release',"
        " 'kitbuilder.apply.db') if m in sys.modules)\n"
        "print('loaded=' + ','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Usage: kit inspect" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "loaded="


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kitbuilder.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in COMMAND_MODULES:
        assert f"  {name} " in result.stdout or f"  {name}\n" in result.stdout, name
