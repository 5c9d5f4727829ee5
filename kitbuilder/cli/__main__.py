"""``python -m kitbuilder.cli``: the same ``kit`` command as the console entry point."""

from kitbuilder.cli import main

main()
