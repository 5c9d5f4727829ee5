"""Kept for old links: the kit build / verify / patch benchmark is now bench/run.py.

python bench/kit_bench.py --size-gib 1.0 [other run.py options]
  = python bench/run.py --size-mib 1024 [other run.py options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402


def translate(argv: list[str]) -> list[str]:
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--size-gib":
            out += ["--size-mib", str(round(float(next(items)) * 1024))]
        elif item.startswith("--size-gib="):
            out += ["--size-mib", str(round(float(item.split("=", 1)[1]) * 1024))]
        else:
            out.append(item)
    return out


if __name__ == "__main__":
    sys.exit(run.main(translate(sys.argv[1:])))
