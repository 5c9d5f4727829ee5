"""Kits carrying images: `kit build` stores one OCI layout, stock tools read it, export writes it back out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.errors import KitError, UsageError
from kitbuilder.ops import images as images_op
from kitbuilder.ops.images import EXPORT_TEMP_PREFIX, export_images
from kitbuilder.ops.verify import verify_kit
from tests.factories.cli import run_kit
from tests.factories.kits import member_end
from tests.factories.oci_images import ImageSet, sha256
from tests.images.conftest import KIT_IMAGES, Signing, needs_skopeo, needs_umoci, write_image_spec
from tests.images.servers import skopeo

needs_stock_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("zstd", "tar")), reason="needs zstd and tar on PATH"
)


def manifest_of(kit: Path) -> dict[str, Any]:
    result = run_kit("inspect", kit, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def records_of(kit: Path, tmp_path: Path) -> list[dict[str, Any]]:
    target = tmp_path / "manifest-only"
    target.mkdir(exist_ok=True)
    subprocess.run(f"zstd -dc '{kit}' | tar -x -C '{target}' manifest.json", shell=True, check=True)
    return list(json.loads((target / "manifest.json").read_text())["images"])


@needs_stock_tools
def test_kit_records_every_image_and_verifies(image_kit: Path, signing: Signing, tmp_path: Path) -> None:
    records = records_of(image_kit, tmp_path)
    assert [r["ref"] for r in records] == [i["ref"] for i in KIT_IMAGES]
    result = run_kit("verify", image_kit, "--key", signing.pub, "--json")
    assert result.exit_code == 0, result.output
    inspected = run_kit("inspect", image_kit, "--images", "--key", signing.pub, "--json")
    assert inspected.exit_code == 0, inspected.output
    section = json.loads(inspected.stdout)["images"]
    assert [i["digest"] for i in section["images"]] == [r["digest"] for r in records]
    assert section["sharedBytesSaved"] == section["referencedBytes"] - section["storedBytes"] > 0


@needs_stock_tools
@needs_skopeo
@needs_umoci
def test_stock_extraction_gives_a_layout_skopeo_and_umoci_read(image_kit: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(f"zstd -dc '{image_kit}' | tar -x -C '{out}'", shell=True, check=True)
    records = json.loads((out / "manifest.json").read_text())["images"]
    for record in records:
        raw = skopeo("inspect", "--raw", f"oci:{out / 'images'}:{record['ref']}").encode()
        assert sha256(raw) == record["digest"]
    listed = subprocess.run(
        ["umoci", "ls", "--layout", str(out / "images")], check=True, capture_output=True, text=True
    ).stdout.split()
    assert listed == [r["ref"] for r in records]
    # Every blob is listed in SHA256SUMS under its own digest: sha256sum -c checks the layout too.
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=out, check=True)


def test_build_refuses_a_layer_whose_content_is_not_its_digest(
    image_set: ImageSet, signing: Signing, tmp_path: Path
) -> None:
    layout = Path(shutil.copytree(image_set.layout, tmp_path / "src" / "layout"))
    manifest = json.loads((layout / "blobs/sha256" / image_set.digests["app-a"].split(":")[1]).read_text())
    layer = layout / "blobs/sha256" / manifest["layers"][1]["digest"].split(":")[1]
    layer.write_bytes(bytes(layer.stat().st_size))
    spec = write_image_spec(tmp_path / "src", [{"ref": "r.local/a:1", "source": "layout", "sourceRef": "app-a"}])
    out = tmp_path / "bad.kit.tar.zst"
    result = run_kit("build", spec, "--key", signing.key, "--out", out)
    assert result.exit_code == 4, result.output
    assert f"blob {manifest['layers'][1]['digest']}: content has sha256:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_build_refuses_a_platform_filter_matching_nothing(
    image_set: ImageSet, signing: Signing, tmp_path: Path
) -> None:
    spec = write_image_spec(
        image_set.root, [{"ref": "r.local/m:1", "source": "layout", "sourceRef": "multi", "platform": "linux/riscv64"}]
    )
    result = run_kit("build", spec, "--key", signing.key, "--out", tmp_path / "k.kit.tar.zst")
    assert result.exit_code == 2, result.output
    assert "platform: linux/riscv64 matches nothing" in result.stderr


# -- export --------------------------------------------------------------------------------------------------


@needs_skopeo
@needs_umoci
def test_export_writes_a_layout_skopeo_and_umoci_read(
    image_kit: Path, signing: Signing, image_set: ImageSet, tmp_path: Path
) -> None:
    out = tmp_path / "exported"
    result = export_images(image_kit, out, signing.options())
    assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert result.to_json()["blobs"] == len(list((out / "blobs/sha256").iterdir()))
    for record in result.images:
        assert sha256(skopeo("inspect", "--raw", f"oci:{out}:{record.ref}").encode()) == record.digest
    skopeo("copy", "-q", "--all", f"oci:{out}:registry.local/stellaops/multi:1.0", f"oci:{tmp_path / 'copy'}:multi")
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == image_set.digests["multi"]
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{out}:registry.local/stellaops/app-a:1.0", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert (bundle / "rootfs" / "app" / "a.txt").read_bytes() == b"application a\n" * 100
    assert (bundle / "rootfs" / "etc" / "os-release").is_file()


def test_export_refuses_a_non_empty_directory(image_kit: Path, signing: Signing, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty; export writes a fresh OCI layout"):
        export_images(image_kit, out, signing.options())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_clears_what_a_killed_export_left(image_kit: Path, signing: Signing, tmp_path: Path) -> None:
    out = tmp_path / "again"
    (out / f"{EXPORT_TEMP_PREFIX}dead" / "blobs").mkdir(parents=True)
    export_images(image_kit, out, signing.options())
    assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]


def test_export_of_a_kit_changed_after_verify_writes_nothing(
    image_kit: Path, signing: Signing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = Path(shutil.copy(image_kit, tmp_path / "k.kit.tar.zst"))

    def verify_then_tamper(path: Path, options: Any, *, stream: Any = None) -> Any:
        report = verify_kit(path, options, stream=stream)
        # Swap the kit's bytes under the exporter: the biggest blob's data frame gets altered in place.
        biggest = max((f for f in report.manifest.files if f.path.startswith("images/blobs/")), key=lambda f: f.size)
        end = member_end(path, biggest.path)
        with path.open("r+b") as stream:
            stream.seek(end - 200)
            data = bytearray(stream.read(100))
            stream.seek(end - 200)
            stream.write(bytes(b ^ 0x55 for b in data))
        return report

    monkeypatch.setattr(images_op, "verify_kit", verify_then_tamper)
    out = tmp_path / "out"
    with pytest.raises(KitError) as caught:
        export_images(kit, out, signing.options())
    assert caught.value.exit_code in (4, 5)
    assert list(out.iterdir()) == []


def test_export_reads_the_kit_it_verified_even_if_another_is_renamed_over_the_path(
    image_kit: Path, built_kit: Path, signing: Signing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = Path(shutil.copy(image_kit, tmp_path / "k.kit.tar.zst"))
    impostor = Path(shutil.copy(built_kit, tmp_path / "impostor.kit.tar.zst"))

    def verify_then_swap(path: Path, options: Any, *, stream: Any = None) -> Any:
        report = verify_kit(path, options, stream=stream)
        os.replace(impostor, path)  # another file now has the name; the open descriptor is the verified one
        return report

    monkeypatch.setattr(images_op, "verify_kit", verify_then_swap)
    out = tmp_path / "out"
    result = export_images(kit, out, signing.options())
    assert result.blobs > 0
    assert (out / "index.json").is_file()
    assert subprocess.run(["umoci", "ls", "--layout", str(out)], capture_output=True).returncode == 0


def test_export_of_a_kit_without_images(built_kit: Path, kit_env: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from kitbuilder.ops.trust_inputs import load_public
    from kitbuilder.ops.verify import VerifyOptions
    from kitbuilder.trust.signatures import TrustPolicy

    options = VerifyOptions(TrustPolicy((load_public(kit_env.ed_pub),), 1), datetime.now(UTC))
    with pytest.raises(UsageError, match="carries no container images"):
        export_images(built_kit, tmp_path / "none", options)
    assert os.listdir(tmp_path / "none") == []
