"""Product bugs the property test has found, one entry per class, until kitbuilder fixes them.

The property test does not fail on a problem one of these explains (it counts it as a Hypothesis
event instead), so the bounded CI run stays green while the bug is open. It is not hidden: each
class has a strict xfail regression case (test_mutated_kits.py, `test_known_bug_is_still_there`) that
turns into a failure the moment the fix lands. Then delete the entry here, and the property test
checks that class again on every run.

Matchers are narrow on purpose: the mutation layer and field that produce the class, and the words
of the problem it causes. A new symptom is not explained by an old entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.factories.mutate import Mutation


@dataclass(frozen=True)
class KnownBug:
    name: str
    reason: str
    example: Mutation
    matches: Callable[[Mutation, str, list[str]], bool]  # (mutation, one problem, all its problems)


# long-kit-name-exit-2 (kit.name/product/channel now have maxLength 100, so the anti-rollback file name fits).
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def explained_by(mutation: Mutation, problem: str, problems: list[str]) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(mutation, problem, problems)), None)
