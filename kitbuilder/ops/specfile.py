"""Reading a kit spec for ``kit build``: the file read once (its bytes parsed and hashed by core/spec), then
what the spec names checked on disk: every source exists, and each migration, seed and backfill holds
the files apply will need."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kitbuilder import inputfile
from kitbuilder.core.jobs import APPLY_ROLES
from kitbuilder.core.spec import ComponentSpec, KitSpec, SourceListing, check_sources, parse_spec
from kitbuilder.errors import SpecError
from kitbuilder.ops.build_inputs import files_under

# A spec lists components and images: a few KiB. A backfill job is a table, a predicate and a statement.
SPEC_BYTES = 16 << 20
JOB_BYTES = 1 << 20


def load_spec(spec_path: Path) -> KitSpec:
    """Read and check the spec at ``spec_path``; SpecError naming file, line and field.

    Sources come back resolved (absolute, links followed), as ``kit build`` packs them.
    """
    try:
        data = inputfile.read_small(spec_path, limit=SPEC_BYTES, what="spec", too_big=SpecError)
    except OSError as exc:
        raise SpecError(f"{spec_path}: cannot read spec ({exc})") from exc
    spec = _resolved(parse_spec(data, path=spec_path))
    listings = {c.id: _listing(c) for c in spec.components if c.role in APPLY_ROLES}
    check_sources(spec, listings, read_job=_read_job)
    return spec


def _resolved(spec: KitSpec) -> KitSpec:
    components = []
    for component in spec.components:
        source = component.source.resolve()
        where = (*component.location, "source")
        if not source.exists():
            raise spec.error(where, f"{component.source_text} does not exist (paths are relative to the spec file)")
        if not (source.is_file() or source.is_dir()):
            raise spec.error(where, f"{component.source_text} is neither a regular file nor a directory")
        components.append(dataclasses.replace(component, source=source))
    images = []
    for number, image in enumerate(spec.images):
        source = image.source.resolve()
        if not source.exists():
            message = f"{image.source_text} does not exist (paths are relative to the spec file)"
            raise spec.error(("images", number, "source"), message)
        images.append(dataclasses.replace(image, source=source))
    return dataclasses.replace(spec, components=tuple(components), images=tuple(images))


def _listing(component: ComponentSpec) -> SourceListing:
    source = component.source
    if source.is_file():
        return SourceListing(is_dir=False, files=frozenset({source.name}))
    return SourceListing(is_dir=True, files=files_under(source))


def _read_job(path: Path) -> bytes:
    try:
        return inputfile.read_small(path, limit=JOB_BYTES, what="backfill job", too_big=SpecError)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read backfill job ({exc.strerror})") from exc
