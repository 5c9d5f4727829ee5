"""The jsonschema-rs fast path of ``schemas.first_error`` never changes a verdict.

Large kit documents (manifest, archive index) are first offered to jsonschema-rs, which
may only accept; what it refuses goes to fastjsonschema. So the verdict must equal
fastjsonschema's alone for every document the strict kit parser yields. Near misses of
a real kit's manifest and index (edge values, extra keys, trailing newlines, wrong
types) are fed to both; a document where jsonschema-rs accepts and fastjsonschema
refuses would be a schema check silently lost.
"""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kitbuilder.archive.reader import Caps
from kitbuilder.core import jsonio, schemas
from kitbuilder.core.manifest import MANIFEST_JSON
from kitbuilder.errors import FormatError
from kitbuilder.ops.kitfile import read_metadata
from tests.factories import mutate
from tests.factories.mutate import JsonEdit


@cache
def _documents() -> dict[str, dict[str, Any]]:
    metadata = read_metadata(io.BytesIO(mutate.plain_kit()), Caps())
    manifest = jsonio.load_object(metadata.members[MANIFEST_JSON], what=MANIFEST_JSON)
    index = jsonio.load_object(metadata.location.index.to_bytes(), what="archive index")
    v2 = manifest["apiVersion"] == "kitbuilder/v2"
    return {"manifest-v2" if v2 else "manifest": manifest, "index-v2" if v2 else "index": index}


def _fast_verdict(name: str, document: Any) -> bool:
    try:
        schemas._fast(name)(document)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _as_parsed(document: Any) -> Any:
    """``document`` as the strict kit parser would hand it over, or None where that parser refuses it."""
    try:
        return jsonio.load_object(mutate.dump(document, pretty=False), what="document")
    except FormatError:
        return None


def test_the_fast_path_covers_the_documents_that_grow_with_a_kit() -> None:
    assert set(_documents()) <= schemas.LARGE_DOCUMENT_SCHEMAS
    for name, document in _documents().items():
        assert schemas._accepted_fast(name, document), name
        assert schemas.first_error(name, document) is None


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("files", 0, "sha256"), "0" * 64 + "\n"),  # a trailing newline after a `$`-anchored pattern
        (("kit", "expires"), "2099-01-01T00:00:00Z\n"),
        (("kit", "sequence"), True),  # a bool equals 1 in Python
        (("files", 0, "size"), 2**64),
        (("files", 0, "path"), "docs/\u0663.md"),  # a non-ASCII digit
    ],
)
def test_a_near_miss_gets_the_python_verdict(where: tuple[Any, ...], value: Any) -> None:
    name, document = next((n, d) for n, d in _documents().items() if n.startswith("manifest"))
    changed = JsonEdit(node=0, op="set", value=value, at=where).apply(document)
    expected = _fast_verdict(name, changed)
    assert (schemas.first_error(name, changed) is None) == expected


@given(edit=mutate.json_edits(), which=st.sampled_from([0, 1]))
def test_the_verdict_is_fastjsonschemas_for_any_edit(edit: JsonEdit, which: int) -> None:
    name, document = sorted(_documents().items())[which]
    changed = _as_parsed(json.loads(json.dumps(document)) if edit.op == "duplicate-key" else edit.apply(document))
    if changed is None:
        return
    assert (schemas.first_error(name, changed) is None) == _fast_verdict(name, changed)
