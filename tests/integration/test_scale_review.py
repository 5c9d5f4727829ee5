"""Review of the streamed file list and the index as read.

A payload path that is a metadata member's name (docs/format.md §0.7).

``kit build`` never lists one (build_inputs refuses it), but a signed list can: a payload file named
``attestations/x.dsse.json`` or ``SHA256SUMS.sigstore.json`` verified (exit 0) and, once ``tar -x`` put it in an
installed directory, was read there as an attestation or a Sigstore bundle; one named ``manifest.json`` was refused by
verify's scan only, while inspect, patch and ``build --delta-from`` read the list and went on. The list's reader
refuses it, so every reader of the same bytes refuses it the same way, before any payload frame is read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.factories.cli import run_kit
from tests.factories.filelist_kits import crafted_list, extra_metadata_member, shared_metadata_frame
from tests.factories.hostile import RELEASE
from tests.factories.keys import write_pair
from tests.factories.kits import kit_members


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, public = write_pair(RELEASE, tmp_path_factory.mktemp("keys") / "release")
    return public


@pytest.mark.parametrize(
    "name",
    ["attestations/extra.dsse.json", "SHA256SUMS.sigstore.json", "manifest.json", "SHA256SUMS", "manifest.files.jsonl"],
)
def test_a_payload_file_named_as_a_metadata_member_is_refused_by_every_reader(
    tmp_path: Path, trusted: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    kit = tmp_path / "named.kit.tar.zst"
    kit.write_bytes(crafted_list(files=[("docs/a.md", b"a\n"), (name, b"{}\n")]))
    for command in (
        ("verify", kit, "--key", trusted, "--product", "demo"),
        ("inspect", kit, "--files"),
        ("inspect", kit, "--json", "--files"),
        ("diff", kit, kit),
    ):
        result = run_kit(*command)
        assert result.exit_code == 5, (command, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
        assert "line 2" in result.stderr and name in result.stderr and "metadata" in result.stderr, result.stderr
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("before", "name"),
    [("manifest.json", "manifest.json"), ("SHA256SUMS.sig", "SHA256SUMS"), ("manifest.dsse.json", "manifest.json")],
)
def test_a_metadata_member_listed_twice_is_refused_by_every_reader(
    tmp_path: Path, trusted: Path, before: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index read last copy (as tar -x keeps it), so inspect showed it; verify refused only after the signatures,
    # counting members read. `tar -x -k`, or any reader keeping the first, would take the other copy.
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    kit = tmp_path / "twice.kit.tar.zst"
    members = kit_members_of(crafted_list())
    kit.write_bytes(extra_metadata_member(crafted_list(), before, name, members[name]))
    for command in (
        ("verify", kit, "--key", trusted, "--product", "demo"),
        ("inspect", kit),
        ("inspect", kit, "--json", "--files"),
    ):
        result = run_kit(*command)
        assert result.exit_code == 5, (command, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
        assert f"{name} listed twice" in result.stderr, result.stderr
        assert "Traceback" not in result.output


def kit_members_of(data: bytes) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kit.kit.tar.zst"
        path.write_bytes(data)
        return kit_members(path)


@pytest.mark.parametrize("name", ["SHA256SUMS", "SHA256SUMS.sig", "manifest.files.jsonl", "manifest.json"])
def test_two_metadata_members_in_one_frame_are_refused_by_every_reader(
    tmp_path: Path, trusted: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each metadata member lies in frames of its own (docs/format.md §0.2, §0.4). That rule was checked against the
    # signed manifest only (verify, build --delta-from: exit 5), not where the index is read: inspect and kit patch
    # (of such a base) took the same bytes.
    monkeypatch.setenv("KIT_STATE_DIR", str(tmp_path / "state"))
    kit = tmp_path / "shared.kit.tar.zst"
    kit.write_bytes(shared_metadata_frame(crafted_list(), name))
    for command in (
        ("verify", kit, "--key", trusted, "--product", "demo"),
        ("inspect", kit),
        ("inspect", kit, "--json", "--files"),
    ):
        result = run_kit(*command)
        assert result.exit_code == 5, (command, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("kit: "), result.stderr
        assert "frames of its own" in result.stderr, result.stderr
        assert "Traceback" not in result.output
