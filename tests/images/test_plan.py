"""The build side: image sources read, checked and planned into one OCI layout (plan_images)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.core.spec import ImageSpec
from kitbuilder.errors import FormatError, IntegrityError, SpecError, UsageError
from kitbuilder.oci.plan import ImagePlan, plan_images
from tests.factories.oci_images import OCI_MANIFEST, ImageSet, LayoutBuilder, sha256, tar_directory, tar_layer
from tests.images.conftest import needs_skopeo, needs_umoci
from tests.images.servers import skopeo

SPEC = Path("kit.yaml")


def plan(*images: ImageSpec) -> ImagePlan:
    return plan_images(images, spec_path=SPEC)


def read_all(result: ImagePlan) -> dict[str, bytes]:
    """Every member as the build reads it: exactly ``size`` bytes, then EOF."""
    out: dict[str, bytes] = {}
    for member in result.members:
        with member.open() as stream:
            data = stream.read(member.size)
            assert stream.read(1) == b""
        assert len(data) == member.size and hashlib.sha256(data).hexdigest() == member.sha256
        out[member.kit_path] = data
    return out


def write_layout(members: dict[str, bytes], root: Path) -> Path:
    for path, data in members.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root / "images"


def copy_layout(image_set: ImageSet, tmp_path: Path) -> Path:
    return Path(shutil.copytree(image_set.layout, tmp_path / "layout"))


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def manifest_of(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads(blob_file(layout, digest).read_bytes()))


def add_tag(layout: Path, descriptor: dict[str, Any], name: str) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": name}})
    (layout / "index.json").write_text(json.dumps(index))


def add_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    blob_file(layout, digest).write_bytes(data)
    return digest


def test_two_images_share_their_base_layer_once(image_set: ImageSet) -> None:
    result = plan(
        ImageSpec("registry.local/s/app-a:1", image_set.layout, source_ref="app-a"),
        ImageSpec("registry.local/s/app-b:1", image_set.layout, source_ref="app-b"),
    )
    paths = [m.kit_path for m in result.members]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    assert paths[-2:] == ["images/index.json", "images/oci-layout"]
    base = "images/blobs/sha256/" + hashlib.sha256(_gzip_of_base(image_set)).hexdigest()
    assert paths.count(base) == 1
    a, b = result.images
    assert (a.ref, a.digest, a.layers, a.platforms) == (
        "registry.local/s/app-a:1",
        image_set.digests["app-a"],
        2,
        ("linux/amd64",),
    )
    # Each record counts every blob its image references (so shared bytes count for both).
    assert a.size + b.size > sum(m.size for m in result.members if m.kit_path.startswith("images/blobs/"))
    index = json.loads(read_all(result)["images/index.json"])
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] == [
        (a.digest, a.ref),
        (b.digest, b.ref),
    ]


def _gzip_of_base(image_set: ImageSet) -> bytes:
    from tests.factories.oci_images import gzip_bytes

    return gzip_bytes(image_set.base_layer)


def test_multi_platform_index_is_kept_whole(image_set: ImageSet) -> None:
    (record,) = plan(ImageSpec("r.local/m:1", image_set.layout, source_ref="multi")).images
    assert record.digest == image_set.digests["multi"]
    assert record.media_type == "application/vnd.oci.image.index.v1+json"
    assert record.platforms == ("linux/amd64", "linux/arm64/v8")
    assert record.layers == 3  # base (shared by both platforms) + one per platform


def test_platform_filter_keeps_only_that_manifest(image_set: ImageSet) -> None:
    result = plan(ImageSpec("r.local/m:1", image_set.layout, source_ref="multi", platform="linux/arm64"))
    (record,) = result.images
    index = json.loads(read_all(result)["images/index.json"])
    children = json.loads((image_set.layout / "blobs/sha256" / image_set.digests["multi"].split(":")[1]).read_bytes())[
        "manifests"
    ]
    arm = next(c for c in children if c["platform"]["architecture"] == "arm64")
    assert record.digest == arm["digest"] and record.platforms == ("linux/arm64/v8",)
    assert record.media_type == OCI_MANIFEST
    assert index["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert not any(m.kit_path.endswith(image_set.digests["multi"].split(":")[1]) for m in result.members)


def test_oci_archive_reads_like_the_layout_it_holds(image_set: ImageSet) -> None:
    (from_archive,) = plan(ImageSpec("r.local/a:1", image_set.oci_archive)).images
    assert from_archive.digest == image_set.digests["app-a"]
    (explicit,) = plan(ImageSpec("r.local/a:1", image_set.oci_archive, format="oci-archive")).images
    assert explicit == from_archive


def test_docker_save_layers_are_kept_byte_for_byte(image_set: ImageSet) -> None:
    result = plan(ImageSpec("r.local/tool:1", image_set.docker_archive))
    members = read_all(result)
    (record,) = result.images
    manifest = json.loads(members["images/blobs/sha256/" + record.digest.split(":")[1]])
    with tarfile.open(image_set.docker_archive) as archive:
        saved = json.loads(archive.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        layer_tars = [archive.extractfile(name).read() for name in saved["Layers"]]  # type: ignore[union-attr]
        config = archive.extractfile(saved["Config"]).read()  # type: ignore[union-attr]
    # Uncompressed docker layers stay uncompressed: their digests are their diff_ids, as a registry sees them.
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(t) for t in layer_tars]
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar"] * 2
    assert manifest["layers"][0]["digest"] == sha256(image_set.base_layer)
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha256(config),
        "size": len(config),
    }


def test_docker_archive_with_several_images_needs_source_ref(image_set: ImageSet) -> None:
    with pytest.raises(SpecError, match=r"kit.yaml:7: images\[0\]: .*holds 2 images \(one:1, two:2\); set sourceRef"):
        plan(ImageSpec("r.local/x:1", image_set.docker_blobs_archive, line=7))
    (two,) = plan(ImageSpec("r.local/x:2", image_set.docker_blobs_archive, source_ref="two:2")).images
    assert two.platforms == ("linux/arm64",)


def test_gzip_docker_layers_are_named_by_hashing_them(image_set: ImageSet, tmp_path: Path) -> None:
    from tests.factories.oci_images import DockerImage, gzip_bytes, write_docker_archive

    layer = gzip_bytes(tar_layer({"x": b"gz\n"}))
    diff = tar_layer({"x": b"gz\n"})
    image = DockerImage(layers=[diff], tags=["gz:1"])
    archive = write_docker_archive(
        tmp_path / "gz.tar", [DockerImage(layers=[layer], tags=["gz:1"], config=image.config)]
    )
    result = plan(ImageSpec("r.local/gz:1", archive))
    manifest = json.loads(read_all(result)["images/blobs/sha256/" + result.images[0].digest.split(":")[1]])
    assert manifest["layers"][0] == {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": sha256(layer),
        "size": len(layer),
    }


@needs_skopeo
@needs_umoci
def test_planned_layout_reads_in_skopeo_and_umoci(image_set: ImageSet, tmp_path: Path) -> None:
    specs = [
        ImageSpec("registry.local/stellaops/app-a:1.0", image_set.layout, source_ref="app-a"),
        ImageSpec("registry.local/stellaops/multi:1.0", image_set.layout, source_ref="multi"),
        ImageSpec("registry.local/tools/tool:1.0", image_set.docker_archive),
    ]
    result = plan(*specs)
    layout = write_layout(read_all(result), tmp_path)
    for record in result.images:
        raw = skopeo("inspect", "--raw", f"oci:{layout}:{record.ref}").encode()
        assert sha256(raw) == record.digest
    listed = subprocess_out(["umoci", "ls", "--layout", str(layout)]).split()
    assert listed == [s.ref for s in specs]
    stat = subprocess_out(["umoci", "stat", "--image", f"{layout}:registry.local/tools/tool:1.0"])
    assert "layer" in stat.lower() or "history" in stat.lower()
    # skopeo converts the kit's docker-archive image back to a docker archive with the same layers.
    skopeo("copy", "-q", f"oci:{layout}:registry.local/tools/tool:1.0", f"docker-archive:{tmp_path / 'back.tar'}")
    with tarfile.open(tmp_path / "back.tar") as archive:
        back = json.loads(archive.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        layer = archive.extractfile(back["Layers"][0]).read()  # type: ignore[union-attr]
    assert layer == image_set.base_layer


def subprocess_out(command: list[str]) -> str:
    import subprocess

    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


# -- bad input ------------------------------------------------------------------------------------------------


def test_layer_content_not_matching_its_digest_fails_while_read(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    layer = manifest_of(layout, image_set.digests["app-a"])["layers"][1]
    path = blob_file(layout, layer["digest"])
    path.write_bytes(bytes(len(path.read_bytes())))  # same size, other content
    result = plan(ImageSpec("r.local/a:1", layout, source_ref="app-a"))
    member = next(m for m in result.members if m.kit_path.endswith(layer["digest"].split(":")[1]))
    with (
        pytest.raises(IntegrityError, match=rf"{layout}: blob {layer['digest']}: content has sha256:"),
        member.open() as s,
    ):
        while s.read(1 << 16):
            pass


def test_manifest_not_matching_its_digest_fails_at_plan_time(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    path = blob_file(layout, image_set.digests["app-b"])
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2')[: path.stat().st_size])
    with pytest.raises(IntegrityError, match=r"blob sha256:[0-9a-f]{64} .*content has sha256:.*not its digest"):
        plan(ImageSpec("r.local/b:1", layout, source_ref="app-b"))


def test_missing_layer_blob_is_refused(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    layer = manifest_of(layout, image_set.digests["app-a"])["layers"][1]
    blob_file(layout, layer["digest"]).unlink()
    with pytest.raises(IntegrityError, match=rf"blob {layer['digest']} \(.*layer.*\) is referenced but missing"):
        plan(ImageSpec("r.local/a:1", layout, source_ref="app-a"))


def test_descriptor_with_wrong_size_is_refused(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    manifest = manifest_of(layout, image_set.digests["app-a"])
    manifest["layers"][1]["size"] += 1
    data = json.dumps(manifest).encode()
    add_tag(layout, {"mediaType": OCI_MANIFEST, "digest": add_blob(layout, data), "size": len(data)}, "bad-size")
    with pytest.raises(IntegrityError, match=r"has \d+ bytes, its descriptor says \d+"):
        plan(ImageSpec("r.local/a:1", layout, source_ref="bad-size"))


def test_index_pointing_to_a_missing_manifest_is_refused(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    ghost = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "ab" * 32, "size": 321}
    add_tag(layout, ghost, "ghost")
    with pytest.raises(IntegrityError, match=r"blob sha256:(ab){32} is missing from the source"):
        plan(ImageSpec("r.local/g:1", layout, source_ref="ghost"))
    builder = LayoutBuilder(layout)
    child_index = builder.index([(ghost, "linux/amd64")])
    add_tag(layout, child_index, "ghost-index")
    with pytest.raises(IntegrityError, match=r"manifests\[0\] sha256:(ab){32}.*missing from the source"):
        plan(ImageSpec("r.local/g:1", layout, source_ref="ghost-index"))


def test_platform_filter_matching_nothing_names_what_there_is(image_set: ImageSet) -> None:
    with pytest.raises(
        SpecError, match=r"images\[0\]\.platform: linux/s390x matches nothing .*platforms: linux/amd64, linux/arm64/v8"
    ):
        plan(ImageSpec("r.local/m:1", image_set.layout, source_ref="multi", platform="linux/s390x"))
    with pytest.raises(SpecError, match=r"linux/arm64 matches nothing .*platforms: linux/amd64\)"):
        plan(ImageSpec("r.local/a:1", image_set.layout, source_ref="app-a", platform="linux/arm64"))


def test_multi_image_source_without_source_ref_is_a_spec_error(image_set: ImageSet) -> None:
    with pytest.raises(SpecError, match=r"holds 3 images \(app-a, app-b, multi\); set sourceRef to pick one"):
        plan(ImageSpec("r.local/a:1", image_set.layout))
    with pytest.raises(SpecError, match=r"sourceRef: 'app-c' is not in .* \(it holds: app-a, app-b, multi\)"):
        plan(ImageSpec("r.local/a:1", image_set.layout, source_ref="app-c"))


def test_malformed_manifest_json_is_a_format_error(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    for name, data in (
        ("not-json", b"{not json"),
        ("duplicate-key", b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}'),
        ("no-layers", b'{"schemaVersion": 2, "config": {}}'),
    ):
        add_tag(layout, {"mediaType": OCI_MANIFEST, "digest": add_blob(layout, data), "size": len(data)}, name)
        with pytest.raises(FormatError):
            plan(ImageSpec("r.local/a:1", layout, source_ref=name))


def test_other_digest_algorithms_are_refused(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    add_tag(layout, {"mediaType": OCI_MANIFEST, "digest": "sha512:" + "0" * 128, "size": 2}, "sha512")
    with pytest.raises(FormatError, match="uses an algorithm other than sha256"):
        plan(ImageSpec("r.local/a:1", layout, source_ref="sha512"))


def test_source_that_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="without an oci-layout file"):
        plan(ImageSpec("r.local/a:1", tmp_path / "empty"))
    tar_directory(tmp_path / "empty", tmp_path / "empty.tar")
    with pytest.raises(SpecError, match="has neither oci-layout nor manifest.json"):
        plan(ImageSpec("r.local/a:1", tmp_path / "empty.tar"))
    (tmp_path / "layer.tar.gz").write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(UsageError, match="compressed tarball; decompress it first"):
        plan(ImageSpec("r.local/a:1", tmp_path / "layer.tar.gz"))


def test_blob_that_shrinks_after_planning_fails_the_read(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    result = plan(ImageSpec("r.local/a:1", layout, source_ref="app-a"))
    layer = manifest_of(layout, image_set.digests["app-a"])["layers"][0]
    path = blob_file(layout, layer["digest"])
    path.write_bytes(path.read_bytes()[:100])
    member = next(m for m in result.members if m.kit_path.endswith(layer["digest"].split(":")[1]))
    with pytest.raises(IntegrityError, match=r"source ended after 100 of \d+ bytes"), member.open() as stream:
        while stream.read(1 << 16):
            pass


@needs_skopeo
def test_archives_written_by_skopeo(image_set: ImageSet, tmp_path: Path) -> None:
    """oci-archive and docker-archive as skopeo writes them (uncompressed docker layers, <hex>.tar names)."""
    oci_archive = tmp_path / "app-a.oci.tar"
    docker_archive = tmp_path / "app-a.docker.tar"
    skopeo("copy", "-q", f"oci:{image_set.layout}:app-a", f"oci-archive:{oci_archive}:app-a")
    skopeo("copy", "-q", f"oci:{image_set.layout}:app-a", f"docker-archive:{docker_archive}:stellaops/app-a:1.0")
    (from_oci,) = plan(ImageSpec("r.local/a:1", oci_archive)).images
    assert from_oci.digest == image_set.digests["app-a"]
    result = plan(ImageSpec("r.local/a:1", docker_archive, source_ref="stellaops/app-a:1.0"))
    members = read_all(result)
    manifest = json.loads(members["images/blobs/sha256/" + result.images[0].digest.split(":")[1]])
    config = json.loads(members["images/blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert [layer["digest"] for layer in manifest["layers"]] == config["rootfs"]["diff_ids"]
    assert manifest["layers"][0]["digest"] == sha256(image_set.base_layer)
    layout = write_layout(members, tmp_path / "planned")
    assert sha256(skopeo("inspect", "--raw", f"oci:{layout}:r.local/a:1").encode()) == result.images[0].digest


def test_same_blob_with_two_sizes_across_images_is_refused(image_set: ImageSet, tmp_path: Path) -> None:
    layout = copy_layout(image_set, tmp_path)
    manifest = manifest_of(layout, image_set.digests["app-b"])
    manifest["layers"][0]["size"] += 3  # the base layer, which app-a also references with its true size
    data = json.dumps(manifest).encode()
    add_tag(layout, {"mediaType": OCI_MANIFEST, "digest": add_blob(layout, data), "size": len(data)}, "odd")
    with pytest.raises(IntegrityError, match=r"descriptor size \d+ differs from \d+ given for the same blob"):
        plan(
            ImageSpec("r.local/a:1", layout, source_ref="app-a"),
            ImageSpec("r.local/b:1", layout, source_ref="odd"),
        )
