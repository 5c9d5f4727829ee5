"""Real OCI image layouts, oci-archives and `docker save` archives, written from bytes with no network.

Everything is deterministic (tar mtimes 0, gzip mtime 0, seeded pseudo-random
content), so digests are stable across runs. The tests cross-check what this
writes with skopeo and umoci, so a mistake here shows up as a tool refusing it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pseudo_random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def tar_layer(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed, reproducible layer tar holding ``files`` (and their directories)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        directories: set[str] = set()
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for end in range(1, len(parts) + 1):
                directory = "/".join(parts[:end])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory + "/")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    archive.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            archive.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def image_config(
    layers: Sequence[bytes], *, os: str = "linux", arch: str = "amd64", variant: str | None = None
) -> bytes:
    """An image config whose diff_ids are the SHA-256 of the uncompressed layer tars."""
    config: dict[str, Any] = {
        "created": "2025-11-01T00:00:00Z",
        "architecture": arch,
        "os": os,
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]},
        "history": [{"created": "2025-11-01T00:00:00Z", "created_by": f"layer {n}"} for n in range(len(layers))],
    }
    if variant:
        config["variant"] = variant
    return json.dumps(config, sort_keys=True).encode()


class LayoutBuilder:
    """Writes an OCI image layout directory blob by blob; ``finish`` writes index.json and oci-layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self.top: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(
        self,
        layers: Sequence[bytes],
        *,
        os: str = "linux",
        arch: str = "amd64",
        variant: str | None = None,
        compress: bool = True,
    ) -> dict[str, Any]:
        """Store config, layers (gzip'd unless ``compress`` is False) and the manifest; return its descriptor."""
        config = self.blob(image_config(layers, os=os, arch=arch, variant=variant), OCI_CONFIG)
        layer_descriptors = [
            self.blob(gzip_bytes(layer), OCI_LAYER_GZIP) if compress else self.blob(layer, OCI_LAYER)
            for layer in layers
        ]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layer_descriptors}
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)

    def index(self, manifests: Sequence[tuple[dict[str, Any], str]]) -> dict[str, Any]:
        """An image index over (manifest descriptor, "os/arch[/variant]") pairs."""
        entries = []
        for descriptor, platform in manifests:
            parts = platform.split("/")
            entry_platform = {"architecture": parts[1], "os": parts[0]}
            if len(parts) > 2:
                entry_platform["variant"] = parts[2]
            entries.append({**descriptor, "platform": entry_platform})
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return self.blob(json.dumps(document).encode(), OCI_INDEX)

    def tag(self, descriptor: dict[str, Any], name: str) -> None:
        self.top.append({**descriptor, "annotations": {REF_NAME: name}})

    def finish(self) -> Path:
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        (self.root / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.top})
        )
        return self.root


def tar_directory(source: Path, out: Path) -> Path:
    """An oci-archive: a plain tar of a layout directory, names relative to it."""
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    return out


@dataclass
class DockerImage:
    layers: list[bytes]  # layer.tar content as docker writes it (uncompressed for the classic format)
    tags: list[str]
    arch: str = "amd64"
    config: bytes = b""

    def __post_init__(self) -> None:
        if not self.config:
            self.config = image_config(self.layers, arch=self.arch)


def write_docker_archive(out: Path, images: Sequence[DockerImage], *, style: str = "classic") -> Path:
    """A `docker save` archive: classic (<id>/layer.tar, <hex>.json, repositories) or blobs/sha256/ (Docker 25+)."""
    members: dict[str, bytes] = {}
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        config_hex = sha256(image.config).split(":")[1]
        layer_names = []
        parent = ""
        for layer in image.layers:
            if style == "classic":
                # A v1 layer id: derived from the chain, not the content, as docker does.
                layer_id = hashlib.sha256((parent + sha256(layer)).encode()).hexdigest()
                members[f"{layer_id}/VERSION"] = b"1.0"
                members[f"{layer_id}/json"] = json.dumps({"id": layer_id, "parent": parent or None}).encode()
                members[f"{layer_id}/layer.tar"] = layer
                layer_names.append(f"{layer_id}/layer.tar")
                parent = layer_id
            else:
                name = "blobs/sha256/" + sha256(layer).split(":")[1]
                members[name] = layer
                layer_names.append(name)
        config_name = f"{config_hex}.json" if style == "classic" else f"blobs/sha256/{config_hex}"
        members[config_name] = image.config
        manifest.append({"Config": config_name, "RepoTags": image.tags, "Layers": layer_names})
        for tag in image.tags:
            repository, _, label = tag.rpartition(":")
            repositories.setdefault(repository, {})[label] = parent or config_hex
    members["manifest.json"] = json.dumps(manifest).encode()
    if style == "classic":
        members["repositories"] = json.dumps(repositories).encode()
    with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            archive.addfile(info, io.BytesIO(members[name]))
    return out


@dataclass
class ImageSet:
    """The test images: two apps sharing a base layer, a two-platform index, and archive forms."""

    root: Path
    layout: Path  # refs: app-a, app-b, multi
    oci_archive: Path  # tar of a layout holding app-a only (single image: no sourceRef needed)
    docker_archive: Path  # classic docker save of one image, uncompressed layers
    docker_blobs_archive: Path  # Docker 25+ style names (blobs/sha256/...), two images
    base_layer: bytes
    digests: dict[str, str] = field(default_factory=dict)  # ref name → manifest/index digest in the layout


def build_image_set(root: Path, *, big_layer: int = 0) -> ImageSet:
    """Write the standard test images under ``root``; ``big_layer`` adds one layer of that many bytes to app-b."""
    base = tar_layer({"etc/os-release": b"NAME=testos\nVERSION=1\n", "bin/sh": pseudo_random(48_000, 1)})
    app_a = tar_layer({"app/a.txt": b"application a\n" * 100, "app/a.bin": pseudo_random(20_000, 2)})
    app_b_files = {"app/b.txt": b"application b\n" * 50}
    if big_layer:
        app_b_files["app/big.bin"] = pseudo_random(big_layer, 3)
    app_b = tar_layer(app_b_files)
    builder = LayoutBuilder(root / "layout")
    digests: dict[str, str] = {}
    a = builder.image([base, app_a])
    b = builder.image([base, app_b])
    amd64 = builder.image([base, tar_layer({"arch": b"amd64\n"})], arch="amd64")
    arm64 = builder.image([base, tar_layer({"arch": b"arm64\n"})], arch="arm64", variant="v8")
    multi = builder.index([(amd64, "linux/amd64"), (arm64, "linux/arm64/v8")])
    for name, descriptor in (("app-a", a), ("app-b", b), ("multi", multi)):
        builder.tag(descriptor, name)
        digests[name] = descriptor["digest"]
    builder.finish()

    single = LayoutBuilder(root / "single-layout")
    single.tag(single.image([base, app_a]), "app-a")
    single.finish()
    oci_archive = tar_directory(root / "single-layout", root / "app-a.oci.tar")

    docker_archive = write_docker_archive(
        root / "tool.docker.tar",
        [DockerImage(layers=[base, tar_layer({"usr/bin/tool": pseudo_random(10_000, 4)})], tags=["tool:1.0"])],
    )
    docker_blobs_archive = write_docker_archive(
        root / "two.docker.tar",
        [
            DockerImage(layers=[base, tar_layer({"one": b"1\n"})], tags=["one:1"]),
            DockerImage(layers=[base, tar_layer({"two": b"2\n"})], tags=["two:2"], arch="arm64"),
        ],
        style="blobs",
    )
    return ImageSet(
        root=root,
        layout=root / "layout",
        oci_archive=oci_archive,
        docker_archive=docker_archive,
        docker_blobs_archive=docker_blobs_archive,
        base_layer=base,
        digests=digests,
    )
