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

from tests.factories.mutate import Edit, JsonEdit, Mutation, TarField


@dataclass(frozen=True)
class KnownBug:
    name: str
    reason: str
    example: Mutation
    matches: Callable[[Mutation, str, list[str]], bool]  # (mutation, one problem, all its problems)


def _undecoded_frame(mutation: Mutation, problem: str, problems: list[str]) -> bool:
    """Stock zstd finds the accepted kit corrupt; what tar then extracts (or not) follows from that."""
    corrupt = any(
        p.startswith("verify exit 0, but zstd -dc exits") and "Data corruption detected" in p for p in problems
    )
    return corrupt and problem.startswith("verify exit 0, but")


def _unchecked_numeric_field(mutation: Mutation, problem: str, problems: list[str]) -> bool:
    return (
        isinstance(mutation.edit, TarField)
        and mutation.edit.field in ("uid", "gid", "devmajor", "devminor")
        and problem.startswith("verify exit 0, but tar -x exits")
    )


def _lone_surrogate(mutation: Mutation, problem: str, problems: list[str]) -> bool:
    return "surrogates not allowed" in problem and "\\ud800" in repr(mutation)


def _impossible_date(mutation: Mutation, problem: str, problems: list[str]) -> bool:
    return "internal error" in problem and any(
        words in problem for words in ("day is out of range", "must be in 0..59", "OverflowError", "year ")
    )


def _state_file_name_too_long(mutation: Mutation, problem: str, problems: list[str]) -> bool:
    return problem.startswith("verify: exit 2 is not a verdict") and "File name too long" in problem


KNOWN_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "frame-declared-size-not-decoded",
        "issue 10.3: a data frame declaring Frame_Content_Size 0 (or less than its blocks hold) for a member "
        "signed empty is accepted without being decoded; stock `zstd -dc` reports 'Data corruption detected' "
        "and `tar -x` extracts a different set of files",
        Mutation("smuggle", "docs/a.md", Edit("truncate"), encoding="fcs0-raw"),
        _undecoded_frame,
    ),
    KnownBug(
        "tar-uid-gid-not-checked",
        "format.md §8.4 leaves uid/gid/devmajor/devminor unchecked, but GNU tar parses them: a blank, "
        "non-octal or base-256 uid or gid is accepted by kit verify and makes `zstd -dc | tar -x` exit 2",
        Mutation("tar-field", "docs/a.md", TarField("docs/a.md", "uid", number=None, spelling=8)),
        _unchecked_numeric_field,
    ),
    KnownBug(
        "lone-surrogate-crash",
        "issue 10.6: a lone surrogate (\\ud800) in a signed statement makes kit verify exit 70 "
        "(UnicodeEncodeError re-serialising the predicate); in a signed provenance statement it escapes "
        "kit inspect --provenance as an uncaught exception",
        Mutation("signed-statement", "predicate", JsonEdit(0, "set", "\ud800", at=("kit", "version"))),
        _lone_surrogate,
    ),
    KnownBug(
        "impossible-date-crash",
        "issue 10.6: a signed expires of 2099-02-30 or 23:59:60 passes the pattern and kit verify exits 70 "
        "(ValueError from datetime)",
        Mutation("signed-statement", "predicate", JsonEdit(0, "set", "2099-02-30T00:00:00Z", at=("kit", "expires"))),
        _impossible_date,
    ),
)


KNOWN_BUGS += (
    KnownBug(
        "long-kit-name-exit-2",
        "the schema does not bound kit.name or kit.channel; a validly signed kit named with 300 characters passes "
        "every check, then verify exits 2 ('usage error: …/<name>@<channel>.json: cannot create output (File name "
        "too long)') recording the anti-rollback state: a verdict of 2 for a kit's content, and a kit no host accepts",
        Mutation("signed-predicate", "manifest", JsonEdit(0, "set", "a" * 300, at=("kit", "name"))),
        _state_file_name_too_long,
    ),
)


def explained_by(mutation: Mutation, problem: str, problems: list[str]) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(mutation, problem, problems)), None)
