"""`kit images push/export --json` and `kit apply --registry --json` match their schemas, run for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.factories.cli import run_kit
from tests.factories.oci_images import ImageSet
from tests.images.conftest import KIT_IMAGES, Signing, write_image_spec
from tests.images.servers import RegistryServer
from tests.integration.test_json_outputs import assert_matches


def _json(*args: Any) -> tuple[int, dict[str, Any]]:
    result = run_kit(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def test_build_report_lists_the_image_records(image_set: ImageSet, signing: Signing, tmp_path: Path) -> None:
    spec = write_image_spec(image_set.root, [KIT_IMAGES[0], KIT_IMAGES[2]], name="json-images")
    code, document = _json("build", spec, "--key", signing.key, "--out", tmp_path / "images.kit.tar.zst")
    assert code == 0, document
    assert_matches("build-report", document)
    assert [image["ref"] for image in document["images"]] == [KIT_IMAGES[0]["ref"], KIT_IMAGES[2]["ref"]]
    assert document["images"][1]["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_images_export_report_matches_schema(image_kit: Path, signing: Signing, tmp_path: Path) -> None:
    code, document = _json("images", "export", image_kit, tmp_path / "layout", "--key", signing.pub)
    assert code == 0, document
    assert_matches("images-export-report", document)
    assert [image["ref"] for image in document["images"]] == [image["ref"] for image in KIT_IMAGES]
    code, document = _json("images", "export", image_kit, tmp_path / "layout", "--key", signing.pub)
    assert code == 2  # the directory is no longer empty
    assert_matches("images-export-report", document)


def test_images_push_report_matches_schema(image_kit: Path, signing: Signing, fresh_registry: RegistryServer) -> None:
    push = ("images", "push", image_kit, "--key", signing.pub, "--registry", fresh_registry.host, "--no-tls-verify")
    first, second = KIT_IMAGES[0]["ref"], KIT_IMAGES[4]["ref"]  # the second is the first image from another source
    code, document = _json(*push, "--ref", first, "--ref", second)
    assert code == 0, document
    assert_matches("images-push-report", document)
    assert [image["ref"] for image in document["images"]] == [first, second]
    assert document["images"][1]["blobsSent"] == 0
    code, document = _json(*push, "--ref", "registry.local/no/such:1")
    assert code == 2
    assert_matches("images-push-report", document)


def test_apply_with_registry_report_matches_schema(
    image_kit: Path, signing: Signing, fresh_registry: RegistryServer, tmp_path: Path
) -> None:
    code, document = _json(
        "apply",
        image_kit,
        "--key",
        signing.pub,
        "--db",
        tmp_path / "site.db",
        "--artifacts",
        tmp_path / "artifacts",
        "--registry",
        fresh_registry.host,
        "--no-tls-verify",
    )
    assert code == 0, document
    assert_matches("apply-report", document)
    assert len(document["images"]["images"]) == len(KIT_IMAGES)
