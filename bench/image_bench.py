"""Kit build and push of container images against the tools a user would otherwise run.

Run: python bench/image_bench.py [--layers-gib 1.0] [--repeat 2] [--workdir DIR] [--keep]

Generates an OCI image layout holding two images (same repository, tags a and b)
that share a base layer, with at least --layers-gib of gzip'd layers (random
content: incompressible, like real compressed layers), then measures in one run:
  build  kit build of a spec with that images: section  vs  tar -I 'zstd -3 -T2' -cf of the layout  (target >= 0.9x)
  push   kit images push (verify included) into docker-registry
         vs  skopeo copy oci:DIR:tag docker://... for each tag, into another fresh registry      (target >= 1x)
Each command runs --repeat times (fresh registries for each push run) and the best
time counts; both pushes must land the same manifest digests. Results go to
bench/out/image-results.json.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KIT = [sys.executable, "-m", "kitbuilder.cli"]
MiB = 1 << 20
REPOSITORY = "bench/app"


class _HashingFile:
    """A write-only file that also hashes what it is given (the layer's digest, computed while writing)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _blob_dir(layout: Path) -> Path:
    return layout / "blobs" / "sha256"


def _store(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (_blob_dir(layout) / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def make_layer(layout: Path, size: int, name: str) -> tuple[dict[str, Any], str]:
    """A gzip'd tar layer of ``size`` random bytes (level 1: random data does not shrink, gzip stays fast)."""
    temp = layout / f"{name}.tmp"
    sink = _HashingFile(temp)
    diff = hashlib.sha256()

    class _DiffTap:
        """Hashes the uncompressed tar (the layer's diff_id) on its way into gzip."""

        def __init__(self, inner: gzip.GzipFile) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            diff.update(data)
            return self.inner.write(data)

    compressed = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=1, mtime=0)  # type: ignore[arg-type]
    tap: Any = _DiffTap(compressed)
    with compressed, tarfile.open(fileobj=tap, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
        written = 0
        number = 0
        while written < size:
            part = min(64 * MiB, size - written)
            info = tarfile.TarInfo(f"{name}/data-{number:03d}.bin")
            info.size = part
            archive.addfile(info, io.BytesIO(os.urandom(part)))
            written += part
            number += 1
    sink.close()
    digest = sink.digest.hexdigest()
    temp.rename(_blob_dir(layout) / digest)
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": f"sha256:{digest}",
        "size": sink.size,
    }
    return descriptor, f"sha256:{diff.hexdigest()}"


def generate(layout: Path, total: int) -> dict[str, str]:
    """Two images sharing a base layer; returns tag → manifest digest."""
    _blob_dir(layout).mkdir(parents=True)
    base_size = total // 6
    app_size = (total - base_size) // 4 + 1
    base = make_layer(layout, base_size, "base")
    index = []
    digests = {}
    for tag in ("a", "b"):
        layers = [base] + [make_layer(layout, app_size, f"{tag}{n}") for n in range(2)]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
            "config": {"Cmd": ["/bin/true"]},
        }
        config_descriptor = _store(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_descriptor,
            "layers": [descriptor for descriptor, _ in layers],
        }
        descriptor = _store(layout, json.dumps(manifest).encode(), manifest["mediaType"])
        index.append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
        digests[tag] = descriptor["digest"]
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index})
    )
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return digests


SPEC = """\
apiVersion: kitbuilder/v1
name: image-bench
version: "1"
sequence: 1
expires: "2099-01-01T00:00:00Z"
product: bench
images:
  - ref: registry.local/{repository}:a
    source: layout
    sourceRef: a
  - ref: registry.local/{repository}:b
    source: layout
    sourceRef: b
"""


def timed(command: list[str] | str, *, shell: bool = False, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, shell=shell, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    return elapsed


class Registry:
    """A throwaway docker-registry on 127.0.0.1 with its own storage directory."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise SystemExit("needs Debian's docker-registry (apt install docker-registry)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        root.mkdir(parents=True)
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "bench"},
        }
        (root / "config.yml").write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("docker-registry did not start")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def raw_digest(reference: str) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", reference], check=True, capture_output=True
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers-gib", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kit-image-bench-", dir=args.workdir))
    results: dict[str, Any] = {"layersGiB": args.layers_gib}
    try:
        layout = work / "layout"
        digests = generate(layout, int(args.layers_gib * (1 << 30)))
        layout_bytes = sum(p.stat().st_size for p in layout.rglob("*") if p.is_file())
        (work / "spec.yaml").write_text(SPEC.format(repository=REPOSITORY))
        subprocess.run([*KIT, "keygen", "--out", str(work / "k")], check=True, capture_output=True)
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
        kit = work / "images.kit.tar.zst"
        build = min(
            timed(
                [*KIT, "build", str(work / "spec.yaml"), "--key", str(work / "k.key"), "--out", str(kit), "-q"], env=env
            )
            for _ in range(args.repeat)
        )
        tar = min(
            timed(f"tar -I 'zstd -3 -T2' -cf {work}/layout.tar.zst -C {layout} .", shell=True)
            for _ in range(args.repeat)
        )
        results["build"] = {
            "layoutBytes": layout_bytes,
            "kitSeconds": round(build, 3),
            "tarZstdSeconds": round(tar, 3),
            "kitMBps": round(layout_bytes / build / 1e6, 1),
            "tarZstdMBps": round(layout_bytes / tar / 1e6, 1),
            "ratio": round(tar / build, 3),
            "target": ">= 0.9",
        }
        print(f"build: kit {build:.2f}s, tar|zstd -3 -T2 {tar:.2f}s -> {tar / build:.2f}x (target >= 0.9x)")

        # kit images push verifies the whole kit before sending anything; time that part on its own too.
        verify = min(
            timed([*KIT, "verify", str(kit), "--key", str(work / "k.pub"), "--no-state", "-q"])
            for _ in range(args.repeat)
        )
        kit_times, skopeo_times = [], []
        for run in range(args.repeat):
            registry = Registry(work / f"registry-kit-{run}")
            try:
                kit_times.append(
                    timed(
                        [
                            *KIT,
                            "images",
                            "push",
                            str(kit),
                            "--registry",
                            registry.host,
                            "--no-tls-verify",
                            "--key",
                            str(work / "k.pub"),
                            "--no-state",
                            "-q",
                        ]
                    )
                )
                for tag, digest in digests.items():
                    landed = raw_digest(f"docker://{registry.host}/{REPOSITORY}:{tag}")
                    assert landed == digest, f"kit push landed {landed} for {tag}, expected {digest}"
            finally:
                registry.stop()
            registry = Registry(work / f"registry-skopeo-{run}")
            try:
                start = time.perf_counter()
                for tag in digests:
                    timed(
                        [
                            "skopeo",
                            "copy",
                            "-q",
                            "--dest-tls-verify=false",
                            f"oci:{layout}:{tag}",
                            f"docker://{registry.host}/{REPOSITORY}:{tag}",
                        ]
                    )
                skopeo_times.append(time.perf_counter() - start)
                for tag, digest in digests.items():
                    landed = raw_digest(f"docker://{registry.host}/{REPOSITORY}:{tag}")
                    assert landed == digest, f"skopeo landed {landed} for {tag}, expected {digest}"
            finally:
                registry.stop()
        push, skopeo = min(kit_times), min(skopeo_times)
        results["push"] = {
            "kitSeconds": round(push, 3),
            "skopeoSeconds": round(skopeo, 3),
            "kitMBps": round(layout_bytes / push / 1e6, 1),
            "skopeoMBps": round(layout_bytes / skopeo / 1e6, 1),
            "ratio": round(skopeo / push, 3),
            "target": ">= 1.0",
            "kitVerifySeconds": round(verify, 3),
            "ratioWithoutVerify": round(skopeo / max(push - verify, 1e-9), 3),
            "note": "kit push includes a full kit verify; both land the same manifest digests",
        }
        print(
            f"push:  kit {push:.2f}s (verify included), skopeo copy {skopeo:.2f}s -> {skopeo / push:.2f}x "
            f"(target >= 1x); kit verify alone {verify:.2f}s, so sending alone is "
            f"{skopeo / max(push - verify, 1e-9):.2f}x"
        )
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "image-results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
