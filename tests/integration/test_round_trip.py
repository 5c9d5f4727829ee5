"""build → verify → inspect through the CLI, as a release pipeline and an admin run them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.factories.cli import KitEnv, run_json, run_kit


def test_round_trip_verifies_with_both_keys(kit_env: KitEnv, built_kit: Path) -> None:
    code, report = run_json("verify", built_kit, "--key", kit_env.ed_pub, "--key", kit_env.ec_pub)
    assert code == 0
    assert report["ok"] is True
    assert report["kit"]["name"] == "demo-kit"
    assert report["kit"]["sequence"] == 1
    assert len(report["signers"]) == 2
    assert report["kit"]["sha256"] == hashlib.sha256(built_kit.read_bytes()).hexdigest()
    assert report["files"] == 7  # 6 inputs and sbom/kit.cdx.json


def test_human_verify_output_names_checks_and_signers(kit_env: KitEnv, built_kit: Path) -> None:
    result = run_kit("verify", built_kit, "--key", kit_env.ed_pub)
    assert result.exit_code == 0
    assert result.output.startswith(f"OK {built_kit}: demo-kit 1.0.0 sequence 1")
    assert "signed by" in result.output


def test_verify_with_trust_root_and_threshold(kit_env: KitEnv, built_kit: Path, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    result = run_kit(
        "trust",
        "init",
        "--key",
        kit_env.ed_pub,
        "--key",
        kit_env.ec_pub,
        "--key",
        kit_env.other_pub,
        "--threshold",
        "2",
        "--expires",
        "2099-01-01",
        "--out",
        trust,
    )
    assert result.exit_code == 0, result.output
    code, report = run_json("verify", built_kit, "--trust-root", trust)
    assert code == 0 and len(report["signers"]) == 2


def test_threshold_not_met_is_a_trust_error(kit_env: KitEnv, tmp_path: Path) -> None:
    out = tmp_path / "one.kit.tar.zst"
    assert run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out).exit_code == 0
    trust = tmp_path / "trust.json"
    run_kit(
        "trust",
        "init",
        "--key",
        kit_env.ed_pub,
        "--key",
        kit_env.ec_pub,
        "--threshold",
        "2",
        "--expires",
        "2099-01-01",
        "--out",
        trust,
    )
    result = run_kit("verify", out, "--trust-root", trust)
    assert result.exit_code == 3
    assert "1 valid signature(s) by trusted keys, 2 required" in result.stderr


def test_same_key_signing_twice_counts_once(kit_env: KitEnv, tmp_path: Path) -> None:
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--key", kit_env.ed_key, "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "same key" in result.stderr


def test_wrong_key_is_a_trust_error(kit_env: KitEnv, built_kit: Path) -> None:
    result = run_kit("verify", built_kit, "--key", kit_env.other_pub)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1


def test_expired_kit_is_a_policy_error(kit_env: KitEnv, built_kit: Path) -> None:
    result = run_kit("verify", built_kit, "--key", kit_env.ed_pub, "--now", "2100-01-01T00:00:00Z")
    assert result.exit_code == 6
    assert "expired at 2099-01-01T00:00:00Z" in result.stderr


def test_expired_trust_root_is_a_policy_error(kit_env: KitEnv, built_kit: Path, tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    run_kit("trust", "init", "--key", kit_env.ed_pub, "--expires", "2030-01-01", "--out", trust)
    result = run_kit("verify", built_kit, "--trust-root", trust, "--now", "2031-01-01T00:00:00Z")
    assert result.exit_code == 6
    assert "trust root expired" in result.stderr


def test_wrong_product_is_a_policy_error(kit_env: KitEnv, built_kit: Path) -> None:
    result = run_kit("verify", built_kit, "--key", kit_env.ed_pub, "--product", "other")
    assert result.exit_code == 6
    assert "product 'demo'" in result.stderr


def test_no_trust_given_is_a_usage_error(built_kit: Path) -> None:
    code, document = run_json("verify", built_kit)
    assert code == 2
    assert document["ok"] is False and document["error"]["kind"] == "usage"


def test_inspect_reads_metadata_and_marks_signers_unverified(built_kit: Path) -> None:
    code, document = run_json("inspect", built_kit, "--files")
    assert code == 0
    assert document["signatures"]["verified"] is False
    assert len(document["signatures"]["claimedKeyIds"]) == 2
    assert document["roles"]["migration"]["files"] == 3
    assert {f["path"] for f in document["files"]} >= {"migrations/21-101-shard-index/up.sql", "docs/operator/blob.bin"}


def test_inspect_with_key_marks_verified(kit_env: KitEnv, built_kit: Path) -> None:
    code, document = run_json("inspect", built_kit, "--key", kit_env.ed_pub)
    assert code == 0
    assert document["signatures"]["verifiedKeyIds"] == [
        json.loads(json.dumps(document["signatures"]["verifiedKeyIds"]))[0]
    ]
    assert document["signatures"]["verified"] is True


def test_inspect_with_wrong_key_exits_with_trust_error(kit_env: KitEnv, built_kit: Path) -> None:
    result = run_kit("inspect", built_kit, "--key", kit_env.other_pub)
    assert result.exit_code == 3


def test_inspect_does_not_read_payload_frames(built_kit: Path, tmp_path: Path) -> None:
    """Corrupting a payload frame must not affect inspect: it reads only the index and metadata."""
    document = run_json("inspect", built_kit, "--files")[1]
    assert document["files"]
    data = bytearray(built_kit.read_bytes())
    data[100:200] = bytes(100)  # inside the first payload frame
    damaged = tmp_path / "damaged.kit.tar.zst"
    damaged.write_bytes(bytes(data))
    assert run_json("inspect", damaged, "--files")[0] == 0
    assert run_json("inspect", damaged)[0] == 0


def test_reproducible_build_is_byte_identical(kit_env: KitEnv, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.kit.tar.zst", "b.kit.tar.zst"):
        out = tmp_path / name
        result = run_kit(
            "build",
            kit_env.spec,
            "--key",
            kit_env.ed_key,
            "--out",
            out,
            "--threads",
            "2",
            env={"SOURCE_DATE_EPOCH": "1700000000"},
        )
        assert result.exit_code == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_thread_count_does_not_change_bytes_once_multithreaded(kit_env: KitEnv, tmp_path: Path) -> None:
    digests = set()
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}.kit.tar.zst"
        assert (
            # A fixed SOURCE_DATE_EPOCH: without it `created` is the clock, which may tick between the two builds.
            run_kit(
                "build",
                kit_env.spec,
                "--key",
                kit_env.ed_key,
                "--out",
                out,
                "--threads",
                threads,
                env={"SOURCE_DATE_EPOCH": "1700000000"},
            ).exit_code
            == 0
        )
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_source_date_epoch_sets_created_and_mtimes(kit_env: KitEnv, built_kit: Path) -> None:
    document = run_json("inspect", built_kit)[1]
    assert document["kit"]["created"] == "2023-11-14T22:13:20Z"


def test_failed_build_leaves_no_output(kit_env: KitEnv, tmp_path: Path) -> None:
    (kit_env.root / "src/docs/link").symlink_to("/etc/passwd")
    out = tmp_path / "out" / "x.kit.tar.zst"
    result = run_kit("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out)
    assert result.exit_code == 2
    assert "not a regular file" in result.stderr
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_encrypted_private_key_needs_passphrase(tmp_path: Path, kit_env: KitEnv) -> None:
    env = {"KIT_PASSPHRASE": "correct horse"}
    result = run_kit("keygen", "--type", "ecdsa-p256", "--out", tmp_path / "enc", env=env)
    assert result.exit_code == 0
    assert b"ENCRYPTED" in (tmp_path / "enc.key").read_bytes()
    out = tmp_path / "e.kit.tar.zst"
    missing = run_kit("build", kit_env.spec, "--key", tmp_path / "enc.key", "--out", out, env={"KIT_PASSPHRASE": ""})
    assert missing.exit_code == 2 and "KIT_PASSPHRASE" in missing.stderr
    ok = run_kit("build", kit_env.spec, "--key", tmp_path / "enc.key", "--out", out, env=env)
    assert ok.exit_code == 0
    assert run_kit("verify", out, "--key", tmp_path / "enc.pub").exit_code == 0


def test_keygen_key_id_is_sha256_of_spki(tmp_path: Path) -> None:
    code, document = run_json("keygen", "--type", "ed25519", "--out", tmp_path / "k")
    assert code == 0
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes())
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert document["keyid"] == hashlib.sha256(der).hexdigest()


def test_any_trusted_signer_is_enough_with_threshold_one(kit_env: KitEnv, built_kit: Path) -> None:
    """Signed by A (first) and B; an admin who trusts only B verifies; SHA256SUMS.sig (A's) is reported unchecked."""
    code, report = run_json("verify", built_kit, "--key", kit_env.ec_pub)
    assert code == 0
    assert report["checksumSigner"] is None
    assert any("not checked" in check for check in report["checks"])
    code, report = run_json("verify", built_kit, "--key", kit_env.ed_pub)
    assert code == 0 and report["checksumSigner"] == report["signers"][0]


def test_trust_root_that_is_not_json_is_a_usage_error(built_kit: Path, tmp_path: Path) -> None:
    bad = tmp_path / "trust.json"
    bad.write_text("{not json")
    result = run_kit("verify", built_kit, "--trust-root", bad)
    assert result.exit_code == 2
    assert "trust.json: not valid JSON" in result.stderr


def test_source_date_epoch_out_of_range_is_a_usage_error(kit_env: KitEnv, tmp_path: Path) -> None:
    for value in ("99999999999", "²", "-1"):
        result = run_kit(
            "build",
            kit_env.spec,
            "--key",
            kit_env.ed_key,
            "--out",
            tmp_path / "x.kit.tar.zst",
            env={"SOURCE_DATE_EPOCH": value},
        )
        assert result.exit_code == 2, value
        assert "SOURCE_DATE_EPOCH" in result.stderr
