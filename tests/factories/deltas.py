"""Signed format-2 delta kits made on purpose wrong, through the writer kit itself uses.

What a holder of a release key (or a buggy release pipeline) could ship: the frames it carries, the target
metadata and the delta block are chosen by the test, everything is validly signed with the given key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kitbuilder.archive.reader import Caps
from kitbuilder.core.dsse import IN_TOTO_PAYLOAD_TYPE
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_DSSE, MANIFEST_JSON, SHA256SUMS, Manifest
from kitbuilder.core.manifest_parts import DeltaInfo
from kitbuilder.core.statement import MANIFEST_PREDICATE_TYPE, Statement, Subject
from kitbuilder.ops import delta as delta_module
from kitbuilder.ops.delta import write_delta_kit
from kitbuilder.ops.delta_content import CONTENT, ContentShipper, FilePlan, plan_files
from kitbuilder.ops.frame_reuse import BaseFrames, FrameMap
from kitbuilder.ops.kitfile import open_kit, read_metadata
from kitbuilder.ops.trust_inputs import load_private
from kitbuilder.trust.signatures import TrustPolicy, sign_envelope

# Makes a content delta's shipper from the base, the target's frames, the plan of changed files and the level:
# ContentShipper itself, or one that tampers with what it carries.
Shipper = Callable[[BaseFrames, FrameMap, FilePlan, int], ContentShipper]


def craft_delta(
    key: Path,
    base: Path,
    full: Path,
    out: Path,
    *,
    ship: str = "changed",
    edit_target: dict[str, Any] | None = None,
    edit_info: Callable[[dict[str, Any]], None] | None = None,
    misname: bool = False,
    content: Shipper | None = None,
) -> Path:
    """A delta from ``full`` to ``base`` signed with ``key``: it ships the frames the base lacks
    (``ship="changed"``) or none (``"none"``); ``edit_target`` replaces fields of the target manifest, which is
    then signed again (its provenance, which names the old manifest, is left out); ``edit_info`` edits the
    ``delta`` block last; ``misname`` carries each shipped frame under the name of the next one (the last under
    the first's), so every ``delta/frames/<sha256>`` member holds another frame than its name says; ``content``
    makes a content delta (its delta block says ``"frames": "content"`` before ``edit_info``) whose shipper it
    makes (``Shipper``)."""
    caps = Caps()
    private = load_private(key)
    with open_kit(base) as stream:
        base_meta = read_metadata(stream, caps)
    with contextlib.ExitStack() as held:
        stream = held.enter_context(open_kit(full))
        target = read_metadata(stream, caps)
        frames = FrameMap(target.manifest, what=str(full))
        have = {f.sha256 for f in base_meta.manifest.frames}
        numbered = enumerate(target.manifest.frames)
        shipped = [n for n, f in numbered if f.sha256 not in have] if ship == "changed" else []
        shipper = None
        if content is not None:
            reuse = BaseFrames(base, TrustPolicy(keys=(private.public,), threshold=1), caps)
            held.callback(reuse.close)
            plan = plan_files(reuse.files(), target.manifest.files, set(shipped))
            shipper = content(reuse, frames, plan, target.manifest.build.compression.level)
        members = dict(target.members)
        if edit_target is not None:
            document = json.loads(members[MANIFEST_JSON])
            document.update(edit_target)
            manifest = Manifest.from_json(document)
            members = {name: data for name, data in members.items() if not name.startswith("attestations/")}
            members[MANIFEST_JSON] = manifest.to_bytes()
            # Format 2 signs the file list by the digest its fileList states (and SHA256SUMS); format 1 every file.
            listed = (
                (Subject(name=FILE_LIST, sha256=manifest.file_list.sha256),)
                if manifest.file_list is not None
                else tuple(Subject(name=f.path, sha256=f.sha256) for f in manifest.files)
            )
            statement = Statement(
                subjects=listed + (Subject(name=SHA256SUMS, sha256=hashlib.sha256(members[SHA256SUMS]).hexdigest()),),
                predicate_type=MANIFEST_PREDICATE_TYPE,
                predicate=manifest.to_json(),
            )
            members[MANIFEST_DSSE] = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.to_bytes(), [private]).to_bytes()
        info: dict[str, Any] = {
            "baseManifestSha256": hashlib.sha256(base_meta.members[MANIFEST_JSON]).hexdigest(),
            "baseSequence": base_meta.manifest.kit.sequence,
            "baseVersion": base_meta.manifest.kit.version,
            "removed": [],
            "targetManifestSha256": hashlib.sha256(members[MANIFEST_JSON]).hexdigest(),
        }
        if content is not None:
            info["frames"] = CONTENT
        if edit_info is not None:
            edit_info(info)
        with out.open("wb") as sink, _misnamed(frames, shipped) if misname else contextlib.nullcontext():
            file_list = delta_module.target_list(target, stream, caps)
            write_delta_kit(
                sink,
                stream,
                frames,
                shipped,
                members,
                DeltaInfo.from_json(info),
                [private],
                file_list=file_list,
                content=shipper,
            )
    return out


@contextlib.contextmanager
def _misnamed(frames: FrameMap, shipped: list[int]) -> Iterator[None]:
    """While a delta is written, name each shipped frame's member after the next shipped frame."""
    digests = [frames.frames[number].sha256 for number in shipped]
    swap = dict(zip(digests, digests[1:] + digests[:1], strict=True))
    genuine = delta_module.frame_member_name
    delta_module.frame_member_name = lambda sha256: genuine(swap.get(sha256, sha256))
    try:
        yield
    finally:
        delta_module.frame_member_name = genuine
