"""Regenerate the small demo images under images/ (committed; rerun only to change them).

They stand in for the real StellaOps and PostgreSQL images of the air-gap kit so the
example builds anywhere without a registry: an OCI image layout with the Concelier
service and its migration runner (sharing a base layer), and a `docker save` archive
of a database image. Run from the repository root:

    python examples/airgap-kit/make-images.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.factories.oci_images import (  # noqa: E402 - the demo images reuse the test image builder
    DockerImage,
    LayoutBuilder,
    pseudo_random,
    tar_layer,
    write_docker_archive,
)

HERE = Path(__file__).resolve().parent / "images"


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir()
    base = tar_layer({"etc/os-release": b"NAME=demo-base\nVERSION=3.20\n", "lib/libc.so": pseudo_random(40_000, 11)})
    layout = LayoutBuilder(HERE / "stellaops")
    concelier = layout.image([base, tar_layer({"app/concelier": pseudo_random(30_000, 12)})])
    runner = layout.image([base, tar_layer({"app/migration-runner": pseudo_random(20_000, 13)})])
    layout.tag(concelier, "concelier-2025.11.1")
    layout.tag(runner, "migration-runner-2025.11.1")
    layout.finish()
    write_docker_archive(
        HERE / "demo-db-16.docker.tar",
        [DockerImage(layers=[base, tar_layer({"usr/bin/demo-db": pseudo_random(25_000, 14)})], tags=["demo-db:16"])],
    )


if __name__ == "__main__":
    main()
