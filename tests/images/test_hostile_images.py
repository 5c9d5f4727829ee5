"""Hostile container images: a kit's images/ layout as a compromised pipeline signs it, and hostile image sources.

Verify side: every kit here is validly signed by the trusted key (crafted with
kitbuilder's own writer, tests/integration/test_hostile_metadata.craft_kit), so
what refuses it is the layout check (docs/images.md §4, format.md §8.10). The same
kit also goes through `kit inspect --images` without a key, which anyone can be
made to run on a forged kit: it must refuse with the same code, never crash.

Build side: image sources an upstream could hand over (an OCI layout directory,
an oci-archive, a `docker save` archive) with symlinks, FIFOs, `..` names and
duplicate members. Nothing outside the source may be read into the kit, and the
build must neither hang nor pack something other tools would not show.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from kitbuilder.core.spec import ImageSpec
from kitbuilder.errors import FormatError, IntegrityError, KitError, UsageError
from kitbuilder.oci.plan import ImagePlan, plan_images
from tests.factories.cli import run_kit
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.oci_images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    REF_NAME,
    DockerImage,
    LayoutBuilder,
    sha256,
    tar_directory,
    tar_layer,
)
from tests.images.conftest import Signing, write_image_spec
from tests.integration.test_hostile_metadata import (
    INJECTION,
    MEMORY_BOUND,
    assert_nothing_recorded,
    assert_refused,
    craft_kit,
    peak_allocation,
)

MiB = 1 << 20
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()


class OciTree:
    """A kit's images/ tree built blob by blob, with the manifest.json records kit build would write for it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"images/oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
        self.top: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        self.files["images/blobs/sha256/" + digest.split(":")[1]] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def manifest(self, layers: Sequence[bytes] = (b"layer one",), *, config: bytes = CONFIG) -> dict[str, Any]:
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(config, OCI_CONFIG),
            "layers": [self.blob(layer, OCI_LAYER) for layer in layers],
        }
        return self.manifest_from(document)

    def manifest_from(self, document: dict[str, Any], raw: bytes | None = None) -> dict[str, Any]:
        return self.blob(raw if raw is not None else json.dumps(document).encode(), OCI_MANIFEST)

    def image(self, ref: str = "registry.local/team/app:1", layers: Sequence[bytes] = (b"layer one",)) -> None:
        """A one-platform image named ``ref``, recorded as kit build records it."""
        descriptor = self.manifest(layers)
        self.top.append({**descriptor, "annotations": {REF_NAME: ref}})
        self.records.append(
            {
                "ref": ref,
                "digest": descriptor["digest"],
                "mediaType": OCI_MANIFEST,
                "platforms": ["linux/amd64"],
                "size": len(CONFIG) + sum(len(layer) for layer in set(layers)) + descriptor["size"],
                "layers": len(set(layers)),
            }
        )

    def tag(self, descriptor: dict[str, Any], ref: str = "registry.local/team/app:1", *, record: bool = True) -> None:
        """Name ``descriptor`` in index.json; with ``record``, manifest.json records it too (its facts unchecked:
        the cases using this fail in the walk, before records are compared)."""
        self.top.append({**descriptor, "annotations": {REF_NAME: ref}})
        if record:
            facts = {"mediaType": descriptor["mediaType"], "platforms": [], "size": 0, "layers": 0}
            self.records.append({"ref": ref, "digest": descriptor["digest"], **facts})

    def index_json(self) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.top}).encode()

    def kit_files(self, index: bytes | None = None) -> dict[str, bytes]:
        return {**self.files, "images/index.json": self.index_json() if index is None else index}


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    return write_pair(RELEASE, tmp_path / "keys" / "release")[1]


def image_kit(tmp_path: Path, tree: OciTree, index: bytes | None = None) -> Path:
    return craft_kit(tmp_path / "images.kit.tar.zst", tree.kit_files(index), images=tree.records)


# ---------------------------------------------------------------------------------------------------------------
# verify and inspect: a signed layout that lies


def _index_nested_5000_deep(tree: OciTree) -> bytes:
    tree.image()
    return b'{"schemaVersion": 2, "manifests": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _layer_size_past_2_64(tree: OciTree) -> bytes:
    layer = tree.blob(b"layer one", OCI_LAYER)
    layer["size"] = 2**64 + 9
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": tree.blob(CONFIG, OCI_CONFIG)}
    tree.tag(tree.manifest_from({**document, "layers": [layer]}))
    return tree.index_json()


def _size_with_5000_digits(tree: OciTree) -> bytes:
    tree.image()
    return re.sub(rb'"size": \d+', b'"size": ' + b"9" * 5000, tree.index_json(), count=1)


def _retyped(change: Callable[[dict[str, Any]], None]) -> Callable[[OciTree], bytes]:
    """The good image with its index.json entry changed by ``change``."""

    def make(tree: OciTree) -> bytes:
        tree.image()
        change(tree.top[0])
        return tree.index_json()

    return make


def _manifest_over_4_mib(tree: OciTree) -> bytes:
    tree.image(layers=[b"layer one"] * 100_001)
    return tree.index_json()


def _same_manifest_with_two_sizes(tree: OciTree) -> bytes:
    """An index lists one manifest twice, the second time one byte longer: which size does a consumer trust?"""
    manifest = tree.manifest()
    children = [
        {**manifest, "platform": {"os": "linux", "architecture": "amd64"}},
        {**manifest, "size": manifest["size"] + 1, "platform": {"os": "linux", "architecture": "arm64"}},
    ]
    tree.tag(tree.blob(json.dumps({"schemaVersion": 2, "manifests": children}).encode(), OCI_INDEX))
    return tree.index_json()


def _config_not_json(tree: OciTree) -> bytes:
    tree.tag(tree.manifest(config=b"\x7fELF\x02\x01\x01" + bytes(64)))
    return tree.index_json()


def _child_of_unknown_type(tree: OciTree) -> bytes:
    text = tree.blob(b"#!/bin/sh\n", "text/x-shellscript")
    tree.tag(tree.blob(json.dumps({"schemaVersion": 2, "manifests": [text]}).encode(), OCI_INDEX))
    return tree.index_json()


def _manifest_with_duplicate_key(tree: OciTree) -> bytes:
    """Two `layers` keys: Go's encoding/json takes the last, a first-wins parser the first."""
    config, layer = tree.blob(CONFIG, OCI_CONFIG), tree.blob(b"layer one", OCI_LAYER)
    raw = (
        f'{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}", "config": {json.dumps(config)}, '
        f'"layers": [], "layers": [{json.dumps(layer)}]}}'
    ).encode()
    tree.tag(tree.manifest_from({}, raw))
    return tree.index_json()


HOSTILE_LAYOUTS: dict[str, tuple[Callable[[OciTree], bytes], int, tuple[str, ...]]] = {
    "index_nested_5000_deep": (_index_nested_5000_deep, 5, ("images/index.json", "nested too deeply")),
    "layer_size_past_2_64": (_layer_size_past_2_64, 4, ("gives 18446744073709551625",)),
    "size_with_5000_digits": (_size_with_5000_digits, 5, ("images/index.json", "not valid JSON")),
    "size_is_a_float": (
        _retyped(lambda d: d.update(size=float(d["size"]))),
        5,
        ("manifests[0]", "not a non-negative integer"),
    ),
    "digest_climbs_out_of_blobs": (
        _retyped(lambda d: d.update(digest="sha256:../../../../etc/passwd")),
        5,
        ("manifests[0]", "not a sha256 digest"),
    ),
    "top_entry_is_a_layer": (
        _retyped(lambda d: d.update(mediaType=OCI_LAYER)),
        5,
        ("manifests[0]", "is not an image manifest or index"),
    ),
    "platform_os_is_a_list": (
        _retyped(lambda d: d.update(platform={"os": ["linux"], "architecture": "amd64"})),
        5,
        ("manifests[0]", "platform"),
    ),
    "ref_annotation_is_a_number": (
        _retyped(lambda d: d.update(annotations={REF_NAME: 1})),
        5,
        ("manifests[0]", "annotations"),
    ),
    "manifest_over_4_mib": (_manifest_over_4_mib, 5, ("manifests[0]", "more than the 4194304-byte limit")),
    "same_manifest_with_two_sizes": (_same_manifest_with_two_sizes, 4, ("differs from",)),
    "config_not_json": (_config_not_json, 5, ("config", "not valid JSON")),
    "child_of_unknown_type": (_child_of_unknown_type, 5, ("text/x-shellscript", "not a manifest or index")),
    "manifest_with_duplicate_key": (_manifest_with_duplicate_key, 5, ("duplicate key 'layers'",)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LAYOUTS))
def test_hostile_signed_layout_is_refused_by_verify_and_inspect(name: str, tmp_path: Path, pub: Path) -> None:
    make, code, words = HOSTILE_LAYOUTS[name]
    tree = OciTree()
    kit = image_kit(tmp_path, tree, make(tree))
    assert_refused(run_kit("verify", kit, "--key", pub), code, *words)
    assert_nothing_recorded()
    assert_refused(run_kit("inspect", kit, "--images"), code, *words)


def _unreferenced_layer_kit(tmp_path: Path) -> Path:
    tree = OciTree()
    tree.image()
    tree.blob(b"\x7fELF a binary nothing names", OCI_LAYER)
    return image_kit(tmp_path, tree)


def test_export_of_a_hostile_layout_writes_nothing(tmp_path: Path, pub: Path) -> None:
    out = tmp_path / "exported"
    result = run_kit("images", "export", _unreferenced_layer_kit(tmp_path), out, "--key", pub)
    assert_refused(result, 4, "nothing in images/index.json references it")
    assert not out.exists() or list(out.iterdir()) == []


def test_apply_with_registry_refuses_a_hostile_layout_before_database_and_registry(tmp_path: Path, pub: Path) -> None:
    """Verify comes first: exit 4, not 11 (port 9 has no registry), and no database or evidence."""
    db, artifacts = tmp_path / "site.db", tmp_path / "artifacts"
    result = run_kit(
        "apply",
        _unreferenced_layer_kit(tmp_path),
        "--key",
        pub,
        "--db",
        f"sqlite:///{db}",
        "--artifacts",
        artifacts,
        "--registry",
        "127.0.0.1:9",
    )
    assert_refused(result, 4, "nothing in images/index.json references it")
    assert not db.exists() and not artifacts.exists()
    assert_nothing_recorded()


def test_inspect_images_checks_a_layout_the_manifest_does_not_record(tmp_path: Path, pub: Path) -> None:
    tree = OciTree()
    tree.image()
    tree.records.clear()
    kit = image_kit(tmp_path, tree)
    assert_refused(run_kit("verify", kit, "--key", pub), 4, "which manifest.json does not record")
    assert_refused(run_kit("inspect", kit, "--images"), 4, "which manifest.json does not record")


@pytest.mark.parametrize(
    "ref", ["registry.local/team/../../v2/_catalog:1?x=y#z", "registry.local/team/app:1\nimage registry.local/ok:1"]
)
def test_image_ref_that_is_no_reference_is_refused(ref: str, tmp_path: Path, pub: Path) -> None:
    tree = OciTree()
    tree.image(ref=ref)
    kit = image_kit(tmp_path, tree)
    assert_refused(run_kit("verify", kit, "--key", pub), 5, "images[0]")
    assert_refused(run_kit("inspect", kit, "--images"), 5, "images[0]")


def test_index_name_cannot_write_lines_into_the_error(tmp_path: Path, pub: Path) -> None:
    tree = OciTree()
    tree.image()
    tree.tag(tree.manifest([b"layer two"]), ref="registry.local/team/extra:1" + INJECTION, record=False)
    kit = image_kit(tmp_path, tree)
    assert_refused(run_kit("verify", kit, "--key", pub), 4, "images/index.json")
    assert_refused(run_kit("inspect", kit, "--images"), 4, "images/index.json")


def test_layout_check_holds_one_oci_document_at_a_time(tmp_path: Path, pub: Path) -> None:
    tree = OciTree()
    for number in range(16):
        layer = b"layer %d" % number
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": tree.blob(CONFIG, OCI_CONFIG),
            "layers": [tree.blob(layer, OCI_LAYER)],
        }
        compact = json.dumps(document).encode()
        padded = compact[:-1] + b" " * (4 * MiB - len(compact)) + b"}"
        descriptor = tree.manifest_from(document, padded)
        ref = f"registry.local/team/app{number}:1"
        tree.tag(descriptor, ref, record=False)
        tree.records.append(
            {
                "ref": ref,
                "digest": descriptor["digest"],
                "mediaType": OCI_MANIFEST,
                "platforms": ["linux/amd64"],
                "size": len(CONFIG) + len(layer) + len(padded),
                "layers": 1,
            }
        )
    kit = image_kit(tmp_path, tree)
    assert kit.stat().st_size < 100_000
    inspected, peak = peak_allocation(lambda: run_kit("inspect", kit, "--images"))
    assert inspected.exit_code == 0, inspected.output
    assert peak < MEMORY_BOUND, f"inspect --images peaked at {peak >> 20} MiB"
    verified, peak = peak_allocation(lambda: run_kit("verify", kit, "--key", pub, "--no-state"))
    assert verified.exit_code == 0, verified.output
    assert peak < MEMORY_BOUND, f"verify peaked at {peak >> 20} MiB"


# ---------------------------------------------------------------------------------------------------------------
# build: hostile image sources

SPEC = Path("kit.yaml")


def plan_and_read(source: Path, **spec: Any) -> ImagePlan:
    """Plan one image and read every member as the build does (the layer checks run in that read)."""
    planned = plan_images([ImageSpec("registry.local/team/app:1", source, **spec)], spec_path=SPEC)
    for member in planned.members:
        with member.open() as stream:
            while stream.read(1 << 20):
                pass
    return planned


class FifoWatch:
    """Notices whether anything opens the FIFO ``path`` for reading, and lets such a reader go on (it reads EOF).

    Without it a reader would block for ever; with it a test can both finish and tell that the FIFO was opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody has it open for reading
                self._stop.wait(0.005)
                continue
            self.opened = True
            os.close(descriptor)

    def __enter__(self) -> FifoWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def _layout(root: Path) -> tuple[Path, dict[str, Any]]:
    builder = LayoutBuilder(root)
    descriptor = builder.image([tar_layer({"app/run": b"#!/bin/sh\necho hi\n"})], compress=False)
    builder.tag(descriptor, "app")
    builder.finish()
    return root, json.loads((root / "blobs/sha256" / descriptor["digest"].split(":")[1]).read_bytes())


def test_layout_blob_symlinked_to_a_secret_outside_is_never_packed(
    tmp_path: Path, signing: Signing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob that is a symlink to a file outside the layout (same size as the layer) fails its digest check."""
    layout, manifest = _layout(tmp_path / "src" / "layout")
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    secret = tmp_path / "signing.key"
    secret.write_bytes(b"TOP-SECRET-" + b"k" * (layer.stat().st_size - 11))
    layer.unlink()
    layer.symlink_to(secret)
    spec = write_image_spec(tmp_path / "src", [{"ref": "registry.local/team/app:1", "source": "layout"}])
    out = tmp_path / "out" / "images.kit.tar.zst"
    out.parent.mkdir()
    monkeypatch.chdir(tmp_path / "out")  # so a stray write to the working directory shows up below too
    result = run_kit("build", spec, "--key", signing.key, "--out", out)
    assert_refused(result, 4, str(layout), manifest["layers"][0]["digest"])
    assert "TOP-SECRET" not in result.output
    assert list(out.parent.iterdir()) == []


def test_layout_blob_that_is_a_fifo_is_missing_and_never_opened(tmp_path: Path) -> None:
    layout, manifest = _layout(tmp_path / "layout")
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    layer.unlink()
    os.mkfifo(layer)
    with FifoWatch(layer) as watch, pytest.raises(IntegrityError, match="is referenced but missing"):
        plan_and_read(layout)
    assert not watch.opened


def test_layout_index_that_is_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    layout, _ = _layout(tmp_path / "layout")
    (layout / "index.json").unlink()
    os.mkfifo(layout / "index.json")
    with FifoWatch(layout / "index.json") as watch:
        try:
            plan_and_read(layout)
        except KitError as error:
            refusal: KitError | None = error
        else:
            refusal = None
    # Without the watch the build would still be waiting in open(); with it, the open returned and read nothing.
    assert isinstance(refusal, UsageError), f"{type(refusal).__name__}: {refusal} (watch saw an open: {watch.opened})"
    assert "index.json" in str(refusal) and "regular file" in str(refusal)


def _docker_archive(path: Path, members: Sequence[tuple[str, bytes | str]]) -> Path:
    """A `docker save`-shaped tar from (name, data) pairs; a str is a symlink target. Names are kept as given."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def _docker_parts(image: DockerImage) -> tuple[str, bytes, str, bytes]:
    """(config name, config, layer name, layer) as classic docker save names them."""
    layer = image.layers[0]
    return f"{sha256(image.config).split(':')[1]}.json", image.config, f"{sha256(layer).split(':')[1]}/layer.tar", layer


def _docker_manifest(config: str, layer: str, tag: str = "app:1") -> bytes:
    return json.dumps([{"Config": config, "RepoTags": [tag], "Layers": [layer]}]).encode()


def test_docker_archive_layer_symlinked_outside_the_archive_is_missing(tmp_path: Path) -> None:
    config_name, config, layer_name, _ = _docker_parts(DockerImage([tar_layer({"a": b"a"})], ["app:1"]))
    archive = _docker_archive(
        tmp_path / "sym.tar",
        [
            ("manifest.json", _docker_manifest(config_name, layer_name)),
            (config_name, config),
            (layer_name, "../../../../../../etc/hostname"),
        ],
    )
    with pytest.raises(IntegrityError, match=rf"layer {re.escape(layer_name)} .* missing from the archive"):
        plan_and_read(archive)


def test_docker_archive_names_that_climb_out_are_not_read(tmp_path: Path) -> None:
    image = DockerImage([tar_layer({"a": b"a"})], ["app:1"])
    archive = _docker_archive(
        tmp_path / "dotdot.tar",
        [
            ("manifest.json", _docker_manifest("../config.json", "../../layer.tar")),
            ("../config.json", image.config),
            ("../../layer.tar", image.layers[0]),
        ],
    )
    with pytest.raises(FormatError, match=r"has no \.\./config\.json"):
        plan_and_read(archive)


def test_docker_archive_with_two_manifest_json_is_refused(tmp_path: Path) -> None:
    shown = DockerImage([tar_layer({"etc/motd": b"reviewed\n"})], ["app:1"])
    packed = DockerImage([tar_layer({"etc/motd": b"backdoored\n"})], ["app:1"])
    members: list[tuple[str, bytes | str]] = []
    manifests: list[bytes] = []
    for image in (shown, packed):
        config_name, config, layer_name, layer = _docker_parts(image)
        members += [(config_name, config), (layer_name, layer)]
        manifests.append(_docker_manifest(config_name, layer_name))
    archive = _docker_archive(
        tmp_path / "two.tar", [("manifest.json", manifests[0]), *members, ("manifest.json", manifests[1])]
    )
    if shutil.which("skopeo"):
        inspected = subprocess.run(
            ["skopeo", "inspect", "--config", f"docker-archive:{archive}"], capture_output=True, text=True, check=True
        )
        assert json.loads(inspected.stdout)["rootfs"]["diff_ids"] == [sha256(shown.layers[0])]
    with pytest.raises(FormatError, match="manifest.json"):
        plan_and_read(archive)


def test_oci_archive_with_a_second_altered_copy_of_a_blob_is_refused(tmp_path: Path) -> None:
    """`tar -x` keeps the last copy of a name; so does the build, and the altered copy fails its digest."""
    layout, manifest = _layout(tmp_path / "layout")
    layer_path = "blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]
    archive = tar_directory(layout, tmp_path / "app.oci.tar")
    with tarfile.open(archive, "a", format=tarfile.PAX_FORMAT) as tar:
        altered = (layout / layer_path).read_bytes().replace(b"echo hi", b"rm -rf")
        info = tarfile.TarInfo(layer_path)
        info.size = len(altered)
        tar.addfile(info, io.BytesIO(altered))
    with pytest.raises((FormatError, IntegrityError), match=manifest["layers"][0]["digest"].split(":")[1]):
        plan_and_read(archive)
