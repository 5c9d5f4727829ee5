"""Run many mutants and group what goes wrong by class, instead of stopping at the first failure.

    python -m tests.property.explore --examples 3000 --seed 1 --out /tmp/explore.jsonl

Each line of the output is one mutant with a problem: its layer, the mutation (repr, so it can be
rebuilt), the verify exit code and the problems. At the end a summary groups them by class (layer plus
the first problem with numbers and paths blanked). This is a tool for the long runs the CI profile is too
small for; the property test in test_mutated_kits.py is what the suite runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings


def problem_class(layer: str, problems: list[str]) -> str:
    first = problems[0]
    first = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]", "…", first)
    first = re.sub(r"\S*mutant\.kit\.tar\.zst", "KIT", first)
    first = re.sub(r"\d+", "N", first)
    return f"{layer}: {first[:160]}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    os.environ.setdefault("KIT_STATE_DIR", tempfile.mkdtemp(prefix="kit-explore-state-"))

    from tests.factories.mutate import Mutation, mutations
    from tests.property.test_mutated_kits import examine

    classes: collections.Counter[str] = collections.Counter()
    first_seen: dict[str, str] = {}
    exits: collections.Counter[int] = collections.Counter()

    @settings(
        max_examples=options.examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @seed(options.seed)
    @given(mutations())
    def explore(mutation: Mutation) -> None:
        try:
            verify, problems = examine(mutation)
        except Exception as exc:  # noqa: BLE001 - the factory itself failed to build this mutant
            problems, code = [f"factory: {type(exc).__name__}: {exc}"], -2
        else:
            code = verify.exit_code
        exits[code] += 1
        if problems:
            key = problem_class(mutation.layer, problems)
            classes[key] += 1
            first_seen.setdefault(key, repr(mutation))
            with options.out.open("a") as log:
                record = {"class": key, "mutation": repr(mutation), "exit": code, "problems": problems}
                log.write(json.dumps(record) + "\n")

    explore()
    print(f"verify exit codes: {dict(sorted(exits.items()))}", file=sys.stderr)
    for key, count in classes.most_common():
        print(f"{count:5d}  {key}\n       e.g. {first_seen[key][:400]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
