"""Findings of a second adversarial pass: signals, the trust inputs beside a kit, the anti-rollback state.

Each case is something nobody listed in the first review. Every one asserts the verdict the product rules
ask for: a documented exit code, exactly one line on stderr, no traceback, nothing left beside the target.
Cases that used to hang (a FIFO, /dev/zero) run kit in a child, so a regression fails instead of hanging.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.core import jsonio
from tests.factories.cli import KitEnv, run_kit
from tests.factories.hostile import OPS, RELEASE, STRANGER
from tests.factories.keys import ed25519_key, write_pair
from tests.integration.test_hostile_parse import RSS_BOUND_KIB, assert_refused, run_measured

_KIT = [sys.executable, "-c", "from kitbuilder.cli import main; main()"]
# Not a time limit on kit: a guard so a read that never ends fails the test instead of hanging the suite.
HANG_GUARD_SECONDS = 120
MiB = 1 << 20


def run_child(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_KIT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        env={**os.environ, "KIT_DEBUG": "", **(env or {})},
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, f"not one line: {done.stderr!r}"
    for word in words:
        assert word in done.stderr, f"{word!r} not in {done.stderr!r}"


# ---------------------------------------------------------------------------------------------------------------
# the anti-rollback state: read through links, from FIFOs and devices, without a bound


def _state_record(kit_env: KitEnv, kit: Path) -> Path:
    assert run_kit("verify", kit, "--key", kit_env.ed_pub).exit_code == 0
    (record,) = Path(os.environ["KIT_STATE_DIR"]).iterdir()
    return record


@pytest.mark.parametrize("shape", ["link_to_dev_zero", "fifo", "link_to_a_good_record", "directory"])
def test_anti_rollback_state_that_is_not_a_regular_file_is_refused_not_read(
    kit_env: KitEnv, built_kit: Path, shape: str
) -> None:
    record = _state_record(kit_env, built_kit)
    good = record.read_bytes()
    record.unlink()
    if shape == "link_to_dev_zero":
        record.symlink_to("/dev/zero")
    elif shape == "fifo":
        os.mkfifo(record)
    elif shape == "directory":
        record.mkdir()
    else:
        elsewhere = kit_env.root / "elsewhere.json"
        elsewhere.write_bytes(good)
        record.symlink_to(elsewhere)
    done = run_child("verify", built_kit, "--key", kit_env.ed_pub)
    assert_one_line(done, 2, "anti-rollback state", str(record))
    assert record.is_symlink() or not record.is_file()  # left for the admin to look at, not replaced


def test_anti_rollback_state_of_a_gigabyte_is_refused_before_it_is_read(kit_env: KitEnv, built_kit: Path) -> None:
    record = _state_record(kit_env, built_kit)
    os.truncate(record, 1 << 30)  # sparse: costs no disk, reads as a gigabyte of zeros
    result = run_measured("verify", built_kit, "--key", kit_env.ed_pub)
    assert result["rc"] == 2, result
    assert result["stderr"].count("\n") == 1 and "anti-rollback state" in result["stderr"], result
    assert result["maxrss"] < RSS_BOUND_KIB, f"peak RSS {result['maxrss'] >> 10} MiB"


# ---------------------------------------------------------------------------------------------------------------
# keys, trust roots and detached attestations named on the command line


@pytest.mark.parametrize("source", ["fifo", "dev_zero"])
@pytest.mark.parametrize("option", ["--key", "--trust-root", "--attestation", "trust update", "--sign-key"])
def test_trust_input_that_is_not_a_regular_file_is_refused_not_read(
    kit_env: KitEnv, built_kit: Path, option: str, source: str
) -> None:
    path = Path("/dev/zero")
    if source == "fifo":
        path = kit_env.root / "input.fifo"
        os.mkfifo(path)
    trust = kit_env.root / "trust.json"
    assert run_kit("trust", "init", "--key", kit_env.ed_pub, "--expires", "2099-01-01", "--out", trust).exit_code == 0
    before = sorted(p.name for p in kit_env.root.iterdir())
    args: tuple[Any, ...] = {
        "--key": ("verify", built_kit, "--key", path),
        "--trust-root": ("verify", built_kit, "--trust-root", path),
        "--attestation": ("verify", built_kit, "--key", kit_env.ed_pub, "--attestation", path),
        "trust update": ("trust", "update", "--trust-root", trust, path),
        "--sign-key": ("build", kit_env.spec, "--key", path, "--out", kit_env.root / "new.kit.tar.zst"),
    }[option]
    done = run_child(*args)
    assert_one_line(done, 2, str(path), "not a regular file")
    assert sorted(p.name for p in kit_env.root.iterdir()) == before


@pytest.mark.parametrize("option", ["--key", "--trust-root"])
def test_trust_input_of_a_gigabyte_is_refused_before_it_is_read(kit_env: KitEnv, built_kit: Path, option: str) -> None:
    huge = kit_env.root / "huge"
    huge.write_bytes(b"")
    os.truncate(huge, 1 << 30)
    result = run_measured("verify", built_kit, option, huge)
    assert result["rc"] == 2, result
    assert result["stderr"].count("\n") == 1 and "bytes, more than the" in result["stderr"], result
    assert result["maxrss"] < RSS_BOUND_KIB, f"peak RSS {result['maxrss'] >> 10} MiB"


# ---------------------------------------------------------------------------------------------------------------
# trust root signatures: each counts for the key its keyid names, each key is tried once


def _successor(kit_env: KitEnv, signatures: list[dict[str, str]]) -> tuple[Path, Path]:
    trust = kit_env.root / "trust.json"
    assert run_kit("trust", "init", "--key", kit_env.ed_pub, "--expires", "2099-01-01", "--out", trust).exit_code == 0
    document = json.loads(trust.read_text())
    document["signed"]["version"] = 2
    document["signatures"] = signatures
    successor = kit_env.root / "trust-v2.json"
    successor.write_text(json.dumps(document))
    return trust, successor


def _sign(signed: dict[str, Any]) -> str:
    return base64.b64encode(RELEASE.sign(jsonio.dump_compact(signed))).decode("ascii")


def test_trust_root_signature_filed_under_another_keyid_is_not_counted(kit_env: KitEnv) -> None:
    trust, successor = _successor(kit_env, [])
    signed = json.loads(successor.read_text())["signed"]
    good = _sign(signed)
    for keyid in (STRANGER.keyid, OPS.keyid, "0" * 64):
        document = {"signed": signed, "signatures": [{"keyid": keyid, "sig": good}]}
        successor.write_text(json.dumps(document))
        assert_refused(run_kit("trust", "update", "--trust-root", trust, successor), 3, "self-signature")
    document = {"signed": signed, "signatures": [{"keyid": RELEASE.keyid, "sig": good}]}
    successor.write_text(json.dumps(document))
    assert run_kit("trust", "update", "--trust-root", trust, successor).exit_code == 0


def test_trust_root_of_many_signatures_and_keys_costs_one_verification_per_key(
    kit_env: KitEnv, built_kit: Path
) -> None:
    """800 keys and 4000 signatures under 1 MiB: trying each signature on each key was 3.2 million checks."""
    trust, successor = _successor(kit_env, [])
    document = json.loads(successor.read_text())
    extra = [ed25519_key(f"many-{n}") for n in range(800)]
    document["signed"]["keys"] += [
        {"keyid": k.keyid, "type": "ed25519", "publicKeyPem": k.public.to_pem().decode("ascii")} for k in extra
    ]
    bogus = base64.b64encode(bytes(64)).decode("ascii")
    document["signatures"] = [{"keyid": extra[n % 800].keyid, "sig": bogus} for n in range(4000)]
    successor.write_text(json.dumps(document))
    assert successor.stat().st_size < 1 << 20
    done = run_child("verify", built_kit, "--trust-root", successor)
    assert_one_line(done, 3, "self-signature")


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM outside `kit apply`: its default ended kit with no line and left temporary files


def _build_args(kit_env: KitEnv, out: Path) -> tuple[Any, ...]:
    return ("build", kit_env.spec, "--key", kit_env.ed_key, "--out", out)


@pytest.mark.parametrize("command", ["build", "keygen", "trust init", "verify (anti-rollback record)"])
@pytest.mark.parametrize("signal_name", ["TERM", "INT"])
def test_signal_during_a_write_is_one_line_and_leaves_nothing(
    kit_env: KitEnv, built_kit: Path, command: str, signal_name: str
) -> None:
    out_dir = kit_env.root / "out"
    out_dir.mkdir()
    state = kit_env.root / "state"
    state.mkdir()
    args: tuple[Any, ...] = {
        "build": _build_args(kit_env, out_dir / "new.kit.tar.zst"),
        "keygen": ("keygen", "--out", out_dir / "fresh"),
        "trust init": (
            "trust",
            "init",
            "--key",
            kit_env.ed_pub,
            "--expires",
            "2099-01-01",
            "--out",
            out_dir / "t.json",
        ),
        "verify (anti-rollback record)": ("verify", built_kit, "--key", kit_env.ed_pub),
    }[command]
    watched = state if command.startswith("verify") else out_dir
    env = {"KIT_FAULT_SIGNAL": f"{signal_name}@atomic-before-rename", "KIT_STATE_DIR": str(state)}
    done = run_child(*args, "--json", env=env)
    code = 143 if signal_name == "TERM" else 130
    assert_one_line(done, code, "interrupted")
    assert json.loads(done.stdout)["error"]["exitCode"] == code
    assert list(watched.iterdir()) == [], "a temporary or final file was left behind"
    rerun = run_child(*args, env={"KIT_STATE_DIR": str(state)})
    assert rerun.returncode == 0, rerun.stderr
    assert not [p for p in watched.iterdir() if re.search(r"kit-tmp", p.name)]


# ---------------------------------------------------------------------------------------------------------------
# OCI documents inside a signed kit: under the 4 MiB cap, but a million Python objects


def _containers_bomb(head: bytes, item: bytes, tail: bytes) -> bytes:
    count = (4 * MiB - 64 - len(head) - len(tail)) // len(item)
    return head + item * count + tail


def _oci_bomb_kit(tmp_path: Path, where: str) -> Path:
    from tests.factories.oci_images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, REF_NAME
    from tests.images.test_hostile_images import CONFIG, OciTree, image_kit

    tree = OciTree()
    config = CONFIG
    if where == "config":
        config = _containers_bomb(b'{"architecture":"amd64","os":"linux","x":[', b"{},", b"{}]}")
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": tree.blob(config, OCI_CONFIG),
        "layers": [tree.blob(b"layer one", OCI_LAYER)],
    }
    raw = json.dumps(document).encode()
    if where == "manifest":
        raw = _containers_bomb(raw[:-1] + b',"x":[', b"[],", b"[]]}")
    descriptor = tree.manifest_from(document, raw)
    ref = "registry.local/team/app:1"
    tree.top.append({**descriptor, "annotations": {REF_NAME: ref}})
    facts = {"mediaType": OCI_MANIFEST, "platforms": ["linux/amd64"], "layers": 1}
    tree.records.append({"ref": ref, "digest": descriptor["digest"], "size": len(config) + 9 + len(raw), **facts})
    return image_kit(tmp_path, tree)


@pytest.mark.parametrize("where", ["config", "manifest"])
def test_oci_document_of_a_million_empty_containers_is_refused_under_the_memory_bound(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    kit = _oci_bomb_kit(tmp_path, where)
    out = tmp_path / "exported"
    for args in (
        ("verify", kit, "--key", pub, "--no-state"),
        ("inspect", kit, "--images"),
        ("images", "export", kit, "--key", pub, out),
    ):
        result = run_measured(*args)
        assert result["rc"] == 5, result
        assert result["stderr"].count("\n") == 1 and "JSON arrays and objects" in result["stderr"], result
        assert result["maxrss"] < RSS_BOUND_KIB, f"{args[0]}: peak RSS {result['maxrss'] >> 10} MiB"
    assert not out.exists() or list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# SBOMs in a signed kit: `inspect --sbom` took 5.8 GiB for 8 MiB of `{},` (every schema error was collected)


@pytest.mark.parametrize(
    "shape",
    [(b',"properties":[', b"{},", b"{}]}"), (b',"x":[', b"[],", b"[]]}"), (b',"metadata":{"x":[', b"0,", b"0]}}")],
)
def test_kit_sbom_of_millions_of_tiny_values_is_refused_under_the_memory_bound(
    tmp_path: Path, shape: tuple[bytes, bytes, bytes]
) -> None:
    from kitbuilder.core.sbom import KIT_SBOM_PATH
    from tests.integration.test_hostile_metadata import CDX, DOCS, craft_kit

    (tmp_path / "keys").mkdir()
    pub = write_pair(RELEASE, tmp_path / "keys" / "release")[1]
    head, item, tail = shape
    head = json.dumps(CDX).encode()[:-1] + head
    sbom = head + item * ((8 * MiB - len(head) - len(tail)) // len(item)) + tail
    kit = craft_kit(tmp_path / "kit.kit.tar.zst", {**DOCS, KIT_SBOM_PATH: sbom})
    result = run_measured("inspect", kit, "--sbom", "--key", pub, "--json")
    assert result["rc"] == 5, result
    assert result["stderr"].count("\n") == 1 and KIT_SBOM_PATH in result["stderr"], result
    assert json.loads(result["stdout"])["error"]["exitCode"] == 5
    assert result["maxrss"] < RSS_BOUND_KIB, f"peak RSS {result['maxrss'] >> 10} MiB"
