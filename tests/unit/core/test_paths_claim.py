"""paths.claim against its straightforward definition, on generated paths.

claim keeps directories in its table so that a path whose parent is already known costs O(1), and collision_key
skips Unicode normalisation for ASCII. Neither may change what is refused or the words used: each is compared
here with the definition written out pairwise (every new path against every path accepted before it), on paths
built from components that collide by case, by Unicode form and by case folding (ß/ss, the Kelvin sign), with
empty and "." components ("a//b", "./a").
"""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from kitbuilder.core import paths

# Components chosen to collide: case, NFC vs NFD (é), case folding beyond ASCII (ß -> ss, KELVIN SIGN -> k,
# the fi ligature -> fi), and the empty and "." components a filesystem ignores.
_COMPONENTS = ["a", "A", "b", "B", "k", "\u212a", "fi", "\ufb01", "ss", "SS", "\u00df", "\u00e9", "e\u0301", ".", ""]


def _reference_key(path: str) -> str:
    normal = unicodedata.normalize("NFC", path)
    return "/".join(p for p in normal.split("/") if p not in ("", ".")).casefold()


def _reference(candidates: list[str]) -> list[str | None]:
    """The definition: a path clashes with an accepted one of the same key (a duplicate), with one that needs it
    to be a directory (the first such, in order), or with one that is a file where it needs a directory (the
    shortest such prefix)."""
    accepted: list[tuple[str, str]] = []
    out: list[str | None] = []
    for path in candidates:
        key = _reference_key(path)
        verdict: str | None = None
        same = [p for k, p in accepted if k == key]
        below = [p for k, p in accepted if k.startswith(key + "/")]
        parts = key.split("/")
        files_above = [p for end in range(1, len(parts)) for k, p in accepted if k == "/".join(parts[:end])]
        if same:
            verdict = f"duplicate of {same[0]} (same name up to case, Unicode form or ./)"
        elif below:
            verdict = f"is a file, but {below[0]} needs it to be a directory"
        elif files_above:
            verdict = f"needs {files_above[0]} to be a directory, but it is a file"
        else:
            accepted.append((key, path))
        out.append(verdict)
    return out


_paths = st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=4).map("/".join)


@settings(max_examples=600, deadline=None)
@given(st.lists(_paths, min_size=1, max_size=25))
def test_claim_refuses_exactly_what_the_pairwise_definition_refuses(candidates: list[str]) -> None:
    seen: dict[str, str] = {}
    assert [paths.claim(path, seen) for path in candidates] == _reference(candidates)


@settings(max_examples=600, deadline=None)
@given(_paths)
def test_the_ascii_shortcut_gives_the_normalised_casefolded_key(path: str) -> None:
    assert paths.collision_key(path) == _reference_key(path)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30))
def test_any_ascii_text_keys_as_its_normalised_casefolded_form(path: str) -> None:
    assert paths.collision_key(path) == _reference_key(path)


def test_a_file_under_a_known_directory_still_clashes_with_a_file_of_the_same_name() -> None:
    """The O(1) path (parent already a directory) keeps the duplicate and file-vs-directory checks."""
    seen: dict[str, str] = {}
    assert paths.claim("docs/a/x.md", seen) is None
    assert paths.claim("docs/a/y.md", seen) is None
    assert paths.claim("docs/A/X.md", seen) == "duplicate of docs/a/x.md (same name up to case, Unicode form or ./)"
    assert paths.claim("docs/a", seen) == "is a file, but docs/a/x.md needs it to be a directory"
    assert paths.claim("docs/a/y.md/z", seen) == "needs docs/a/y.md to be a directory, but it is a file"
    assert paths.claim("./docs//a/z.md", seen) is None
