"""Image sources a spec may name: OCI layout directories, oci-archive tarballs, ``docker save`` archives.

Each source answers the same questions: which images does it hold (top-level
descriptors and their names), how big is a blob, and give me a blob's bytes.
Archives are read in place through the tar member offsets, never extracted.
A ``docker save`` archive is presented as an OCI image: its config and layer
files are kept byte for byte (no recompression), so layer digests stay the ones
a registry sees, and a small OCI manifest is generated for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder.errors import FormatError, IntegrityError, SpecError, UsageError
from kitbuilder.oci import layout
from kitbuilder.oci.layout import Descriptor

FORMATS = ("oci-layout", "oci-archive", "docker-archive")
MAX_TAR_MEMBERS = 200_000
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DOCKER_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class TopImage:
    """One image a source holds at its top level, with the names it goes by."""

    descriptor: Descriptor
    names: tuple[str, ...]


class Source:
    """Blobs by digest plus the list of top-level images; subclasses say where bytes live."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.images: tuple[TopImage, ...] = ()
        # Blobs generated in memory (a docker archive's OCI manifest), by digest.
        self._memory: dict[str, bytes] = {}

    def _stat(self, digest: str) -> int | None:
        raise NotImplementedError

    def _open_raw(self, digest: str) -> BinaryIO:
        raise NotImplementedError

    def blob_size(self, digest: str) -> int | None:
        """The stored size of a blob, or None when the source lacks it."""
        if digest in self._memory:
            return len(self._memory[digest])
        return self._stat(digest)

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """A raw stream at the start of the blob; the caller reads at most its size and checks the digest."""
        if digest in self._memory:
            yield io.BytesIO(self._memory[digest])
            return
        try:
            stream = self._open_raw(digest)
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read blob {digest} ({exc.strerror})") from exc
        with stream:
            yield stream

    def read_blob(self, descriptor: Descriptor, what: str) -> bytes:
        """A small blob's bytes (a JSON document), checked against its descriptor's size and digest."""
        size = self.blob_size(descriptor.digest)
        if size is None:
            raise IntegrityError(f"{self.path}: {what}: blob {descriptor.digest} is missing from the source")
        if size != descriptor.size:
            raise IntegrityError(
                f"{self.path}: {what}: blob {descriptor.digest} has {size} bytes, its descriptor says {descriptor.size}"
            )
        if size > layout.MAX_JSON:
            raise FormatError(f"{self.path}: {what}: {size} bytes, more than the {layout.MAX_JSON}-byte JSON limit")
        with self.open_blob(descriptor.digest) as stream:
            data = stream.read(size)
        if len(data) != size:
            raise IntegrityError(f"{self.path}: blob {descriptor.digest} ended after {len(data)} of {size} bytes")
        observed = hashlib.sha256(data).hexdigest()
        if observed != descriptor.hex:
            raise IntegrityError(
                f"{self.path}: blob {descriptor.digest} ({what}): content has sha256:{observed}, not its digest"
            )
        return data

    def select(self, source_ref: str | None, where: str) -> Descriptor:
        """The one image the spec means: the only one, or the one named ``source_ref``."""
        chosen = choose([(image.names, image.descriptor.digest) for image in self.images], source_ref, where, self.path)
        return next(image.descriptor for image in self.images if image.descriptor.digest == chosen)


def _familiar(name: str) -> str:
    """docker.io/library/postgres:16 → postgres:16: docker writes the short form, skopeo the long one."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def choose(candidates: list[tuple[tuple[str, ...], str]], source_ref: str | None, where: str, path: Path) -> str:
    """Pick one (names, key) candidate: the only distinct key, or the one named ``source_ref``; SpecError else."""
    listing = ", ".join(names[0] if names else "(unnamed)" for names, _ in candidates)
    if source_ref is not None:
        wanted = _familiar(source_ref)
        keys = {key for names, key in candidates if wanted in {_familiar(n) for n in names}}
        if not keys:
            raise SpecError(f"{where}.sourceRef: {source_ref!r} is not in {path} (it holds: {listing})")
        if len(keys) > 1:
            raise SpecError(f"{where}.sourceRef: {source_ref!r} names several different images in {path}")
        return keys.pop()
    keys = {key for _, key in candidates}
    if not keys:
        raise SpecError(f"{where}.source: {path} holds no images")
    if len(keys) > 1:
        raise SpecError(f"{where}: {path} holds {len(candidates)} images ({listing}); set sourceRef to pick one")
    return keys.pop()


class LayoutDirSource(Source):
    """An OCI image layout directory (oci-layout, index.json, blobs/sha256/)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "oci-layout")
        _check_layout_marker(_read_small_file(path / layout.OCI_LAYOUT_FILE), f"{path}/{layout.OCI_LAYOUT_FILE}")
        index_path = path / layout.INDEX_FILE
        self.images = _top_images(_read_small_file(index_path), str(index_path))

    def _blob(self, digest: str) -> Path:
        return self.path.joinpath(*layout.blob_path(digest).split("/"))

    def _stat(self, digest: str) -> int | None:
        try:
            info = os.stat(self._blob(digest))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read blob {digest} ({exc.strerror})") from exc
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def _open_raw(self, digest: str) -> BinaryIO:
        return self._blob(digest).open("rb")


class _TarMembers:
    """Regular-file members of an uncompressed tar, by normalised name, with their data offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as probe:
            magic = probe.read(4)
        if magic.startswith(_GZIP_MAGIC) or magic == _ZSTD_MAGIC:
            raise UsageError(f"{path}: a compressed tarball; decompress it first (images are read in place from a tar)")
        entries: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, mode="r:") as archive:
                for count, info in enumerate(archive):
                    if count >= MAX_TAR_MEMBERS:
                        raise FormatError(f"{path}: more than {MAX_TAR_MEMBERS} tar members")
                    name = _normal_name(info.name)
                    if name is not None and (info.isreg() or info.issym() or info.islnk()):
                        if name in entries:
                            # skopeo/podman read the first copy of a name, tar -x keeps the last: refuse both.
                            raise FormatError(f"{path}: member {name} appears twice; rebuild the archive")
                        entries[name] = info
        except (tarfile.TarError, EOFError) as exc:
            raise FormatError(f"{path}: not a readable tar archive ({exc})") from exc
        self._entries = entries

    def names(self) -> set[str]:
        return set(self._entries)

    def find(self, name: str) -> tarfile.TarInfo | None:
        """The regular file ``name`` refers to, following symlinks and hard links inside the archive."""
        current = _normal_name(name)
        for _ in range(8):
            if current is None:
                return None
            info = self._entries.get(current)
            if info is None or info.isreg():
                return info
            target = info.linkname if info.islnk() else posixpath.join(posixpath.dirname(current), info.linkname)
            current = _normal_name(posixpath.normpath(target))
        return None

    def open(self, info: tarfile.TarInfo) -> BinaryIO:
        stream = self.path.open("rb")
        stream.seek(info.offset_data)
        return stream

    def read_small(self, name: str, what: str) -> bytes:
        info = self.find(name)
        if info is None:
            raise FormatError(f"{self.path}: has no {name} ({what})")
        if info.size > layout.MAX_JSON:
            raise FormatError(f"{self.path}: {name}: {info.size} bytes, more than the {layout.MAX_JSON}-byte limit")
        with self.open(info) as stream:
            data = stream.read(info.size)
        if len(data) != info.size:
            raise FormatError(f"{self.path}: {name}: truncated archive")
        return data


def _normal_name(name: str) -> str | None:
    clean = posixpath.normpath(name.lstrip("/")) if name else ""
    if clean in ("", ".") or clean.startswith(".."):
        return None
    return clean


class ArchiveSource(Source):
    """An oci-archive: a tar of an OCI image layout, read in place."""

    def __init__(self, path: Path, members: _TarMembers) -> None:
        super().__init__(path, "oci-archive")
        self._members = members
        _check_layout_marker(members.read_small(layout.OCI_LAYOUT_FILE, "OCI layout marker"), f"{path}: oci-layout")
        self.images = _top_images(members.read_small(layout.INDEX_FILE, "OCI index"), f"{path}: index.json")

    def _stat(self, digest: str) -> int | None:
        info = self._members.find(layout.blob_path(digest))
        return None if info is None else info.size

    def _open_raw(self, digest: str) -> BinaryIO:
        info = self._members.find(layout.blob_path(digest))
        assert info is not None  # callers ask blob_size first
        return self._members.open(info)


class DockerArchiveSource(Source):
    """A ``docker save`` archive (manifest.json, config JSON, layer tars) presented as OCI images."""

    def __init__(self, path: Path, members: _TarMembers) -> None:
        super().__init__(path, "docker-archive")
        self._members = members
        self._files: dict[str, tarfile.TarInfo] = {}  # digest → layer or config member
        where = f"{path}: manifest.json"
        entries = layout.load_json_value(members.read_small("manifest.json", "docker manifest"), what=where)
        if not isinstance(entries, list) or not entries:
            raise FormatError(f"{where}: expected a non-empty list of images")
        self._entries: list[tuple[tuple[str, ...], dict[str, object]]] = []
        for number, entry in enumerate(entries):
            label = f"{where}[{number}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise FormatError(f"{label}: expected an object with Config (a file name)")
            tags = entry.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise FormatError(f"{label}: RepoTags must be a list of strings")
            self._entries.append((tuple(tags), entry))

    def select(self, source_ref: str | None, where: str) -> Descriptor:
        # Only the chosen image is converted: a compressed layer without a digest name must be hashed to name it.
        candidates = [(tags, str(entry["Config"])) for tags, entry in self._entries]
        config = choose(candidates, source_ref, where, self.path)
        number, entry = next((n, e) for n, (_, e) in enumerate(self._entries) if e["Config"] == config)
        return self._convert(entry, f"{self.path}: manifest.json[{number}]")

    def _convert(self, entry: dict[str, object], label: str) -> Descriptor:
        config_name, layer_names = str(entry["Config"]), entry.get("Layers")
        if not isinstance(layer_names, list):
            raise FormatError(f"{label}: Layers must be a list of file names")
        config_data = self._members.read_small(config_name, "image config")
        config_digest = "sha256:" + hashlib.sha256(config_data).hexdigest()
        config = layout.load_json(config_data, what=f"{self.path}: {config_name}")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
            raise FormatError(f"{self.path}: {config_name}: rootfs.diff_ids does not list one id per layer")
        self._memory[config_digest] = config_data
        layers: list[dict[str, object]] = []
        for number, name in enumerate(layer_names):
            if not isinstance(name, str):
                raise FormatError(f"{label}: Layers[{number}] must be a file name")
            info = self._members.find(name)
            if info is None:
                raise IntegrityError(f"{self.path}: layer {name} named in manifest.json is missing from the archive")
            media_type, digest = self._layer_identity(name, info, diff_ids[number], label)
            self._files[digest] = info
            layers.append({"mediaType": media_type, "digest": digest, "size": info.size})
        # Field order as Go's OCI types marshal it, so the generated manifest reads like any other.
        manifest = {
            "schemaVersion": 2,
            "mediaType": layout.OCI_MANIFEST,
            "config": {"mediaType": layout.OCI_CONFIG, "digest": config_digest, "size": len(config_data)},
            "layers": layers,
        }
        data = layout.json_bytes(manifest)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._memory[digest] = data
        return Descriptor(media_type=layout.OCI_MANIFEST, digest=digest, size=len(data))

    def _layer_identity(self, name: str, info: tarfile.TarInfo, diff_id: object, label: str) -> tuple[str, str]:
        """Media type from the layer's first bytes; digest from its name, its diff_id, or by hashing it."""
        with self._members.open(info) as stream:
            head = stream.read(4)
        if head.startswith(_GZIP_MAGIC):
            media_type = layout.OCI_LAYER_GZIP
        elif head == _ZSTD_MAGIC:
            media_type = layout.OCI_LAYER_ZSTD
        else:
            media_type = layout.OCI_LAYER
        normal = _normal_name(name) or name
        if normal.startswith(layout.BLOBS_DIR + "/"):
            # Recent Docker names layer files by their digest; the read during the build checks it.
            return media_type, "sha256:" + layout.digest_hex("sha256:" + normal.rsplit("/", 1)[1], what=label)
        if media_type == layout.OCI_LAYER and isinstance(diff_id, str):
            # An uncompressed layer's digest is its diff_id; checked while the build reads it.
            layout.digest_hex(diff_id, what=f"{label}: diff_id")
            return media_type, diff_id
        digest = hashlib.sha256()
        with self._members.open(info) as stream:
            left = info.size
            while left:
                chunk = stream.read(min(_CHUNK, left))
                if not chunk:
                    raise FormatError(f"{self.path}: {name}: truncated archive")
                digest.update(chunk)
                left -= len(chunk)
        return media_type, "sha256:" + digest.hexdigest()

    def _stat(self, digest: str) -> int | None:
        info = self._files.get(digest)
        return None if info is None else info.size

    def _open_raw(self, digest: str) -> BinaryIO:
        return self._members.open(self._files[digest])


def open_source(path: Path, kind: str, where: str) -> Source:
    """Open an image source; ``kind`` is auto or one of FORMATS. SpecError when it is not what the spec says."""
    if path.is_dir():
        if kind not in ("auto", "oci-layout"):
            raise SpecError(f"{where}.format: {path} is a directory, so it can only be an oci-layout")
        if not (path / layout.OCI_LAYOUT_FILE).is_file():
            raise SpecError(f"{where}.source: {path} is a directory without an oci-layout file (not an OCI layout)")
        return LayoutDirSource(path)
    if kind == "oci-layout":
        raise SpecError(f"{where}.format: oci-layout needs a directory, {path} is a file")
    members = _TarMembers(path)
    names = members.names()
    if kind == "auto":
        # Recent `docker save` writes both forms; the OCI one carries the full reference names.
        if layout.OCI_LAYOUT_FILE in names:
            kind = "oci-archive"
        elif "manifest.json" in names:
            kind = "docker-archive"
        else:
            raise SpecError(f"{where}.source: {path} has neither oci-layout nor manifest.json (not an image archive)")
    if kind == "oci-archive":
        return ArchiveSource(path, members)
    return DockerArchiveSource(path, members)


def _read_small_file(path: Path) -> bytes:
    try:
        # Checked before opening: opening a FIFO (an upstream tarball can hold one) blocks for ever.
        if not stat.S_ISREG(path.stat().st_mode):
            raise UsageError(f"{path}: not a regular file; an OCI layout holds regular files only")
        with path.open("rb") as stream:
            data = stream.read(layout.MAX_JSON + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
    return data


def _check_layout_marker(data: bytes, what: str) -> None:
    version = layout.load_json(data, what=what).get("imageLayoutVersion")
    if version != layout.LAYOUT_VERSION:
        raise FormatError(f"{what}: imageLayoutVersion {version!r}, expected {layout.LAYOUT_VERSION!r}")


def _top_images(data: bytes, what: str) -> tuple[TopImage, ...]:
    found = []
    for descriptor in layout.parse_index(data, what=what):
        names = tuple(
            descriptor.annotations[key] for key in (layout.REF_NAME, DOCKER_NAME) if key in descriptor.annotations
        )
        found.append(TopImage(descriptor, names))
    return tuple(found)
