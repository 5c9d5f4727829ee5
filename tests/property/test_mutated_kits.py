"""Property: whatever is done to a valid kit, `kit verify` either refuses it cleanly or accepts exactly
what stock `zstd -dc | tar -x` extracts (issue 10, "Done means").

Mutants come from tests/factories/mutate.py: a tar header field, a header or data frame (bytes, or the
same content encoded another way), padding, bytes inserted between frames, the end-of-archive frame, the
index, the footer, the signed manifest and statement (re-signed by the trusted key), SHA256SUMS
(re-signed), manifest.json and the envelope (unsigned), the provenance attestation (re-signed) and the
Sigstore bundle of a kit `kit build` wrote. For every mutant:

- `kit verify` exits 0, 3, 4, 5 or 6 (never 70, 1 or 2), never lets an exception out, and prints exactly
  one line on stderr when it refuses;
- when it exits 0, `zstd -dc KIT | tar -x` into a fresh directory succeeds and yields exactly the members
  it verified, byte for byte, the payload among them signed by the trusted key;
- `kit inspect` (with and without keys) and `kit diff` against the untampered kit obey the same CLI
  contract (no 70, no traceback, one line).

CI runs a bounded, derandomized set (tests/property/conftest.py); KIT_HYPOTHESIS_PROFILE=long runs
thousands. Bugs it found are pinned below as explicit xfail(strict=True) cases, one per class.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given

from tests.factories.hostile import RELEASE
from tests.factories.mutate import Edit, JsonEdit, Mutation, TarField, base_for, mutations
from tests.property.known_bugs import KNOWN_BUGS, KnownBug, explained_by
from tests.property.oracle import Outcome, acceptance_problems, run, stock_tools

# What the content of a kit may make verify exit with (docs/exit-codes.md): 2 is for arguments and the
# files named on the command line, which are all well-formed here.
VERDICTS = frozenset({0, 3, 4, 5, 6})

pytestmark = pytest.mark.skipif(not stock_tools(), reason="needs stock zstd and tar on PATH")


def examine(mutation: Mutation) -> tuple[Outcome, list[str]]:
    """Build the mutant, run verify, inspect and diff on it; the verify outcome and every problem found."""
    data = mutation.build()
    base = base_for(mutation)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kit, good, pub = root / "mutant.kit.tar.zst", root / "base.kit.tar.zst", root / "release.pub"
        kit.write_bytes(data)
        good.write_bytes(base.data)
        pub.write_bytes(RELEASE.public.to_pem())
        verify = run("verify", str(kit), "--key", str(pub), "--product", base.product, state=root / "state-verify")
        problems = verify.problems()
        if verify.exit_code not in VERDICTS and verify.crash is None and verify.exit_code != 70:
            problems.append(f"verify: exit {verify.exit_code} is not a verdict on a kit: {verify.stderr.strip()}")
        if verify.exit_code == 0:
            problems += [f"verify exit 0, but {p}" for p in acceptance_problems(data, kit)]
        for args in (
            ("inspect", str(kit), "--sbom", "--provenance"),
            ("inspect", str(kit), "--key", str(pub)),
            ("diff", str(good), str(kit)),
        ):
            problems += run(*args, state=root / "state-other").problems()
    return verify, problems


@given(mutations())
def test_mutated_kit_is_refused_cleanly_or_is_exactly_what_tar_extracts(mutation: Mutation) -> None:
    verify, problems = examine(mutation)
    event(f"{mutation.layer}: verify exit {verify.exit_code}")
    unexplained = []
    for problem in problems:
        bug = explained_by(mutation, problem, problems)
        if bug is None:
            unexplained.append(problem)
        else:
            event(f"known bug (xfail below until fixed): {bug.name}")
    assert not unexplained, f"{mutation.describe()}: verify exit {verify.exit_code}: " + "; ".join(unexplained)


# Only while a class is open (an empty parametrize would show up as a skip).
if KNOWN_BUGS:

    @pytest.mark.parametrize(
        "bug",
        [
            pytest.param(
                bug, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug.reason), id=bug.name
            )
            for bug in KNOWN_BUGS
        ],
    )
    def test_known_bug_is_still_there(bug: KnownBug) -> None:
        """One explicit mutant per known bug class: it fails (xfail) while the bug is open and passes once fixed,
        which makes this strict xfail fail: then delete the class from known_bugs.py."""
        _, problems = examine(bug.example)
        foreign = [p for p in problems if not bug.matches(bug.example, p, problems)]
        if foreign:  # a different failure than the one this case pins: report it, do not count it as the xfail
            raise RuntimeError(f"{bug.name}: unexpected problems {foreign}")
        assert not problems, "; ".join(problems)


# Classes the property found and kitbuilder has since fixed: one mutant each, with the verdict it must get now.
FIXED = {
    "frame-declared-size-not-decoded": (Mutation("smuggle", "docs/a.md", Edit("truncate"), encoding="fcs0-raw"), 5),
    "tar-uid-gid-not-checked": (
        Mutation("tar-field", "docs/a.md", TarField("docs/a.md", "uid", number=None, spelling=8)),
        5,
    ),
    "lone-surrogate-crash": (
        Mutation("signed-statement", "predicate", JsonEdit(0, "set", "\ud800", at=("kit", "version"))),
        5,
    ),
    "impossible-date-crash": (
        Mutation("signed-statement", "predicate", JsonEdit(0, "set", "2099-02-30T00:00:00Z", at=("kit", "expires"))),
        5,
    ),
    "long-kit-name-exit-2": (
        Mutation("signed-predicate", "manifest", JsonEdit(0, "set", "a" * 300, at=("kit", "name"))),
        5,
    ),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_class_stays_fixed(name: str) -> None:
    mutation, verdict = FIXED[name]
    verify, problems = examine(mutation)
    assert problems == []
    assert verify.exit_code == verdict, verify.stderr


@pytest.mark.parametrize("layer", ["plain", "attested"])
def test_untampered_bases_pass_every_check(layer: str) -> None:
    """The oracle accepts the bases as built, so every problem the property finds comes from its mutation."""
    from tests.factories.mutate import Edit

    mutation = Mutation("raw" if layer == "plain" else "attested-raw", "footer" if layer == "plain" else "index")
    mutation = Mutation(mutation.layer, mutation.where, Edit("insert", 0, 0, b""))  # inserts nothing
    verify, problems = examine(mutation)
    assert verify.exit_code == 0, verify.stderr
    assert problems == []
