"""The air-gap kit example end to end: build, verify, then one `kit apply --registry` does migrations and images."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories.cli import KitEnv, run_kit
from tests.images.conftest import needs_skopeo
from tests.images.servers import RegistryServer, skopeo_raw_digest

ROOT = Path(__file__).resolve().parents[2]


@needs_skopeo
def test_airgap_kit_applies_migrations_and_lands_its_images(kit_env: KitEnv, fresh_registry: RegistryServer) -> None:
    kit = kit_env.root / "stellaops-airgap.kit.tar.zst"
    built = run_kit("build", ROOT / "manifests/airgap-kit.yaml", "--key", kit_env.ed_key, "--out", kit)
    assert built.exit_code == 0, built.output
    verified = run_kit("verify", kit, "--key", kit_env.ed_pub, "--require-provenance", "--json")
    assert verified.exit_code == 0, verified.output
    checks = json.loads(verified.stdout)["checks"]
    assert any(c.startswith("images/: OCI layout of 3 image(s)") for c in checks)

    db = kit_env.root / "site.db"
    result = run_kit(
        "apply", kit, "--key", kit_env.ed_pub, "--db", db, "--artifacts", kit_env.root / "evidence",
        "--registry", fresh_registry.host, "--no-tls-verify", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {s["id"] for s in report["steps"] if s["status"] == "succeeded"} >= {"21-101-shard-ttl", "21-102-supersedes"}
    pushed = {image["ref"]: image for image in report["images"]["images"]}
    inspected = run_kit("inspect", kit, "--key", kit_env.ed_pub, "--images", "--json")
    assert inspected.exit_code == 0
    layout = json.loads(inspected.stdout)["images"]
    assert layout["sharedBytesSaved"] > 0  # the two StellaOps images share their base layer
    assert set(pushed) == {r["ref"] for r in layout["images"]}
    for record in layout["images"]:
        image = pushed[record["ref"]]
        assert image["digest"] == record["digest"]
        assert image["pushedAs"].startswith(fresh_registry.host + "/")
        # What the registry serves is what the kit recorded, as a tool nobody here wrote sees it.
        assert skopeo_raw_digest(f"docker://{image['pushedAs']}", "--tls-verify=false") == record["digest"]


def document_sha(kit: Path, path: str) -> str:
    from kitbuilder.archive.reader import Caps
    from kitbuilder.ops.kitfile import open_kit, read_metadata

    with open_kit(kit) as stream:
        return next(f.sha256 for f in read_metadata(stream, Caps()).manifest.files if f.path == path)


def test_delta_of_an_image_kit_reuses_every_unchanged_blob(kit_env: KitEnv) -> None:
    base = kit_env.root / "base.kit.tar.zst"
    assert run_kit("build", ROOT / "manifests/airgap-kit.yaml", "--key", kit_env.ed_key, "--out", base).exit_code == 0
    spec = (ROOT / "manifests/airgap-kit.yaml").read_text()
    spec = spec.replace("../examples/", f"{ROOT}/examples/").replace("sequence: 1", "sequence: 2")
    (kit_env.root / "next.yaml").write_text(spec.replace('version: "2025.11.1"', 'version: "2025.11.2"'))
    delta, full = kit_env.root / "delta.kit.tar.zst", kit_env.root / "full.kit.tar.zst"
    result = run_kit(
        "build", kit_env.root / "next.yaml", "--key", kit_env.ed_key, "--out", delta,
        "--delta-from", base, "--full-out", full, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # Only the kit SBOM changes (it names the kit version); every image blob is copied from the base.
    assert document["changed"] == ["sbom/kit.cdx.json"] and not document["added"]
    diff = run_kit("diff", base, full, "--key", kit_env.ed_pub, "--json")
    assert diff.exit_code == 0
    changes = json.loads(diff.stdout)
    # Format 2 ships frames: this small kit's images share group frames with the SBOM, so the delta carries
    # exactly the new kit's frames the base lacks (what kit diff counts), not one frame per changed file; by
    # default that group travels as the SBOM's content delta (docs/delta.md, "Content deltas").
    from kitbuilder.archive.reader import Caps
    from kitbuilder.ops.kitfile import open_kit, read_metadata

    with open_kit(delta) as stream:
        carried = read_metadata(stream, Caps()).manifest
    shipped = [f for f in carried.files if f.path.startswith("delta/frames/")]  # each behind a header frame
    patches = [f.path for f in carried.files if f.path.startswith("delta/patches/")]
    assert changes["frames"]["newFrames"] == 1 <= changes["frames"]["new"]
    assert not shipped and len(patches) == 1 and patches[0].split("/")[2] == document_sha(full, "sbom/kit.cdx.json")
    assert changes["images"] == {"added": [], "removed": [], "changed": []}
    assert [f["path"] for f in changes["files"]["changed"]] == ["sbom/kit.cdx.json"]
    patched = kit_env.root / "patched.kit.tar.zst"
    assert run_kit("patch", base, delta, "--key", kit_env.ed_pub, "--out", patched).exit_code == 0
    assert patched.read_bytes() == full.read_bytes()


def test_apply_staging_leaves_image_blobs_in_the_kit(kit_env: KitEnv, tmp_path: Path) -> None:
    """kit apply checks every image blob but stages only what it applies (a registry push reads the kit)."""
    from datetime import UTC, datetime

    from kitbuilder.ops.apply import verified_kit
    from kitbuilder.ops.trust_inputs import load_public
    from kitbuilder.ops.verify import VerifyOptions
    from kitbuilder.trust.signatures import TrustPolicy

    kit = kit_env.root / "stellaops-airgap.kit.tar.zst"
    assert run_kit("build", ROOT / "manifests/airgap-kit.yaml", "--key", kit_env.ed_key, "--out", kit).exit_code == 0
    options = VerifyOptions(policy=TrustPolicy(keys=(load_public(kit_env.ed_pub),), threshold=1), now=datetime.now(UTC))
    with verified_kit(kit, options) as verified:
        staged = {p.relative_to(verified.staging).as_posix() for p in verified.staging.rglob("*") if p.is_file()}
        assert "migrations/21-101-shard-ttl/up.sql" in staged and "sbom/kit.cdx.json" in staged
        assert not [name for name in staged if name.startswith("images/")]
        assert any(f.path.startswith("images/blobs/") for f in verified.report.manifest.files)
